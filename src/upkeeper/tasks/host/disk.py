"""host.disk: space and inodes used on each mount (the quick check; host.health does more)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from upkeeper import lazy
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.fmt import human_bytes

if TYPE_CHECKING:
    import psutil
else:  # the run's, not the CLI's that validates the job (~10 ms): the worker loads it before the run
    psutil = lazy.module("psutil")

# Filesystems that are not real storage.
PSEUDO_FS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "cgroup", "cgroup2", "pstore", "bpf", "tracefs", "debugfs",
    "securityfs", "mqueue", "hugetlbfs", "fusectl", "configfs", "autofs", "binfmt_misc", "squashfs", "overlay",
    "nsfs", "ramfs", "efivarfs", "rpc_pipefs", "fuse.lxcfs", "devfs", "selinuxfs",
})  # fmt: skip


class DiskOptions(TaskOptions):
    mounts: list[str] | None = Field(
        None, description="mount points (or any path on them) to check; default: every real filesystem. "
                "Source: upkeeper (not set by default)"
    )
    warning: float = Field(90, gt=0, le=100, description="warn at this % used. Source: Netdata disk_space_usage")
    critical: float = Field(98, gt=0, le=100, description="critical at this % used. Source: Netdata disk_space_usage")
    inode_warning: float = Field(90, gt=0, le=100, description="warn at this % of inodes used. Source: Netdata")
    inode_critical: float = Field(98, gt=0, le=100, description="critical at this % of inodes used. Source: Netdata")

    @model_validator(mode="after")
    def _ordered(self) -> DiskOptions:
        for warn, crit in (("warning", "critical"), ("inode_warning", "inode_critical")):
            if getattr(self, warn) > getattr(self, crit):
                raise ValueError(f"{warn} ({getattr(self, warn):g} %) is above {crit} ({getattr(self, crit):g} %): "
                                 f"the warning could never come before the critical finding")
        return self


def real_mounts() -> list[str]:
    """The mount points of real filesystems, ``/`` always first: in a container ``/`` is an overlay (left out
    with the pseudo filesystems), yet it is where the app writes -- its usage is that of the disk under the
    container's writable layer, the one that fills up."""
    seen: set[str] = {"/"}
    out = ["/"]
    for p in psutil.disk_partitions(all=False):
        if p.fstype in PSEUDO_FS or p.mountpoint in seen:
            continue
        seen.add(p.mountpoint)
        out.append(p.mountpoint)
    return out


@task
class HostDisk(Task[DiskOptions]):
    """Space and inodes used on each mount against warning/critical thresholds."""

    name = "host.disk"
    summary = "disk space and inodes per mount (warning 90 %, critical 98 %)"
    target_kinds = ("host",)
    Options = DiskOptions
    category = "monitoring"
    default_timeout = 60

    def run(self, ctx: TaskContext, options: DiskOptions) -> Result:
        findings: list[Finding] = []
        metrics: dict[str, float] = {}
        parts = []
        for mount in options.mounts or real_mounts():
            try:
                st = os.statvfs(mount)
            except OSError as exc:
                findings.append(Finding("host.disk_unreadable", Severity.WARNING, mount,
                                        f"cannot stat {mount}: {exc.strerror}", "fix the job's 'mounts' option"))
                continue
            total = st.f_blocks * st.f_frsize
            avail = st.f_bavail * st.f_frsize
            used = (st.f_blocks - st.f_bfree) * st.f_frsize
            # like df: used / (used + available to unprivileged users)
            pct = 100.0 * used / (used + avail) if used + avail else 0.0
            ipct = 100.0 * (st.f_files - st.f_ffree) / st.f_files if st.f_files else 0.0
            metrics[f"{mount}.used_pct"] = round(pct, 2)
            metrics[f"{mount}.free_bytes"] = float(avail)
            metrics[f"{mount}.total_bytes"] = float(total)
            metrics[f"{mount}.inodes_used_pct"] = round(ipct, 2)
            parts.append(f"{mount} {pct:.0f}%")
            for kind, value, warn, crit, check in (
                ("space", pct, options.warning, options.critical, "host.disk_space"),
                ("inodes", ipct, options.inode_warning, options.inode_critical, "host.disk_inodes"),
            ):
                sev = Severity.CRITICAL if value >= crit else Severity.WARNING if value >= warn else None
                if sev is None:
                    continue
                threshold = crit if sev is Severity.CRITICAL else warn
                extra = f" ({human_bytes(avail)} free of {human_bytes(total)})" if kind == "space" else ""
                findings.append(Finding(
                    check, sev, mount, f"{kind} {value:.1f}% used{extra}, threshold {threshold:g}%",
                    "free space: old logs, backups and caches (upkeeper app.maintenance can rotate and prune), "
                    "or grow the filesystem" if kind == "space" else
                    "delete many small files (sessions, caches) or recreate the filesystem with more inodes",
                    value=round(value, 2), threshold=threshold,
                ))
        return Result(summary="disk used: " + ", ".join(parts), findings=findings, metrics=metrics)
