"""security.permissions: private keys, .env files and backup keys readable by others.

Files are found by glob (configured paths, the apps' roots) and by content (PEM private
keys, age identities, OpenSSH keys) in the scanned directories.
"""

from __future__ import annotations

import glob
import os
import pwd
import stat
from pathlib import Path

from pydantic import Field

from upkeeper.config.targets import AppTarget
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.tasks.security._common import CheckOutput

DEFAULT_GLOBS = [
    "/etc/ssl/private/*", "/etc/ssh/ssh_host_*_key", "/root/.ssh/id_*", "/home/*/.ssh/id_*",
    "/etc/letsencrypt/live/*/privkey.pem", "/etc/letsencrypt/archive/*/privkey*.pem",
]
SECRET_MARKERS = (b"-----BEGIN", b"AGE-SECRET-KEY-", b"PRIVATE KEY-----")
SECRET_NAMES = (".env", ".pem", ".key", ".p12", ".pfx", "id_rsa", "id_ed25519", "id_ecdsa", ".age", "age-key",
                "keys.txt", ".pgpass", ".netrc")


def kind_of(path: Path, head: bytes) -> str | None:
    name = path.name
    if name == ".env" or name.startswith(".env."):
        return "environment file"
    if b"AGE-SECRET-KEY-" in head:
        return "age identity (backup key)"
    if b"PRIVATE KEY-----" in head:
        return "private key"
    if name.endswith(".pub"):
        return None
    if name in (".pgpass", ".netrc"):
        return "password file"
    return None


class PermissionsOptions(TaskOptions):
    paths: list[str] = Field(default_factory=lambda: list(DEFAULT_GLOBS),
                             description="files or globs that hold secrets. Source: upkeeper default")
    scan_dirs: list[str] = Field(
        default_factory=list, description="directories searched (recursively) for secret files by name and content; "
        "the roots of app targets are added. Source: upkeeper (not set by default)")
    max_files: int = Field(20000, gt=0, description="stop scanning after this many files (a "
            "security.permissions.scan_incomplete warning says where). Source: upkeeper default")
    group_readable_warns: bool = Field(
        False, description="also warn about group-readable secrets (ssl-cert group setups make this common). "
                "Source: upkeeper default")


def _closed_dirs(pattern: str) -> list[str]:
    """The existing directories on the way to ``pattern``'s matches that this user cannot search (or list, where
    the pattern's next part is a glob): ``glob`` passes over them without a word, so the files in them (say
    ``/root/.ssh/id_*`` run as an unprivileged user) would go unchecked unsaid."""
    parts = Path(pattern).parts
    if len(parts) < 2:
        return []
    closed: list[str] = []
    dirs = [parts[0]]
    for i, part in enumerate(parts[1:], start=1):
        need = os.R_OK | os.X_OK if glob.has_magic(part) else os.X_OK
        nxt: list[str] = []
        for d in dirs:
            if not os.access(d, need):
                closed.append(d)
            elif i < len(parts) - 1:
                nxt += [p for p in glob.glob(os.path.join(glob.escape(d), part)) if os.path.isdir(p)]
        dirs = nxt
    return closed


def _candidates(options: PermissionsOptions, app_roots: list[str],
                closed: list[str] | None = None) -> tuple[list[Path], str | None]:
    """The files to look at, and the directory the scan stopped in when it reached ``max_files`` (else None);
    ``closed`` gets the directories this user could not look into."""
    out: dict[str, Path] = {}
    shut: list[str] = [] if closed is None else closed
    for pattern in options.paths:
        full = os.path.expanduser(pattern)
        for f in glob.glob(full):
            out.setdefault(f, Path(f))
        shut += [d for d in _closed_dirs(full) if d not in shut]
    seen = 0

    def unreadable(exc: OSError) -> None:
        if exc.filename and str(exc.filename) not in shut:
            shut.append(str(exc.filename))

    for d in [*options.scan_dirs, *app_roots]:
        for root, dirs, files in os.walk(d, onerror=unreadable):
            dirs[:] = [x for x in dirs if x not in ("node_modules", ".git", "__pycache__", ".venv", "venv")]
            for name in files:
                seen += 1
                if seen > options.max_files:
                    return list(out.values()), root
                if name.startswith(".env") or name.endswith(SECRET_NAMES) or name in SECRET_NAMES:
                    p = os.path.join(root, name)
                    out.setdefault(p, Path(p))
    return list(out.values()), None


def check_permissions(options: PermissionsOptions, app_roots: list[str] | None = None,
                      known: dict[str, str] | None = None) -> CheckOutput:
    """``known``: files that hold secrets whatever their name and content (upkeeper's own: path → what it is);
    a link among them is followed (Kubernetes mounts secrets as links), other candidates' links are not."""
    out = CheckOutput()
    checked = 0
    known = known or {}
    closed: list[str] = []
    candidates, stopped_in = _candidates(options, app_roots or [], closed)
    candidates += [Path(p) for p in known if p not in {str(c) for c in candidates}]
    if stopped_in is not None:
        out.findings.append(Finding(
            "security.permissions.scan_incomplete", Severity.WARNING, stopped_in,
            f"the scan stopped after max_files ({options.max_files}) files, in {stopped_in}: the files after it "
            "were not checked",
            "raise max_files, or list narrower scan_dirs (upload and cache directories need no scan)",
            value=options.max_files, threshold=options.max_files))
    for path in candidates:
        own = known.get(str(path))
        try:
            st = path.stat() if own else path.lstat()
            if not stat.S_ISREG(st.st_mode):
                continue
        except OSError:
            continue
        try:
            with open(path, "rb") as fh:
                head: bytes | None = fh.read(4096)
        except PermissionError:  # (not by upkeeper's user, say a host key run unprivileged: its mode still tells)
            head = None
        except OSError:
            continue
        if head is None:
            kind = own or kind_of(path, b"") or (None if path.name.endswith(".pub") else "secret file")
        else:
            kind = own or kind_of(path, head) or ("secret file" if any(m in head for m in SECRET_MARKERS) else None)
        if kind is None:
            continue
        checked += 1
        mode = stat.S_IMODE(st.st_mode)
        problems = []
        if mode & stat.S_IROTH:
            problems.append("readable by every user")
        if mode & stat.S_IWOTH:
            problems.append("writable by every user")
        if problems:
            sev = Severity.CRITICAL
        elif options.group_readable_warns and mode & stat.S_IRGRP:
            problems.append("readable by its group")
            sev = Severity.WARNING
        else:
            continue
        out.findings.append(Finding(
            "security.permissions.secret_readable", sev, str(path),
            f"{kind} {path} is {' and '.join(problems)} (mode {mode:04o})",
            f"chmod 600 {path} (and chown it to the service user)", value=f"{mode:04o}", threshold="0600",
            data={"kind": kind, "uid": st.st_uid, "gid": st.st_gid}))
    if closed:
        try:
            me = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            me = f"uid {os.geteuid()}"
        out.findings.append(Finding(
            "security.permissions.not_looked", Severity.INFO, closed[0],
            f"could not look into {len(closed)} director(y/ies) as {me}: {', '.join(closed[:10])}"
            + (" …" if len(closed) > 10 else "") + " -- the secrets there were not checked (closed to "
            f"{me}, they are closed to every user outside their owner and group too)",
            "run security.permissions as root to check them, or leave those paths out of 'paths' and "
            "'scan_dirs'", value=len(closed), data={"directories": closed, "user": me}))
    exposed = sum(1 for f in out.findings if f.check == "security.permissions.secret_readable")
    out.metrics.update({"secrets_checked": float(checked), "exposed": float(exposed),
                        "directories_not_looked": float(len(closed))})
    out.summary = f"{checked} secret file(s) checked, {exposed} readable by others" + (
        f"; scan stopped at max_files ({options.max_files})" if stopped_in is not None else "") + (
        f"; {len(closed)} director(y/ies) not readable by this user (not checked)" if closed else "")
    return out


@task
class SecurityPermissions(Task[PermissionsOptions]):
    """Find private keys, .env files and backup keys (configured globs, app roots, scanned directories,
    recognised by name and content) and report those readable or writable by other users."""

    name = "security.permissions"
    summary = "private keys, .env files and backup keys readable by others"
    target_kinds = ("host", "app")
    Options = PermissionsOptions
    category = "security"
    default_timeout = 300

    def run(self, ctx: TaskContext, options: PermissionsOptions) -> Result:
        roots = app_roots(ctx)
        out = check_permissions(options, roots, upkeeper_secrets(ctx))
        return Result(summary=out.summary, findings=out.findings, metrics=out.metrics)


def upkeeper_secrets(ctx: TaskContext) -> dict[str, str]:
    """upkeeper's own secret files (the config's ``password_file``, age ``identity_file`` …) → what each is."""
    from upkeeper.config.secret_files import secret_files

    if ctx.config is None:
        return {}
    return {os.path.expanduser(sf.path): f"upkeeper secret ({' -> '.join(map(str, sf.where))})"
            for sf in secret_files(ctx.config)}


def app_roots(ctx: TaskContext) -> list[str]:
    roots = []
    if isinstance(ctx.target, AppTarget):
        roots.append(ctx.target.root)
    elif ctx.config is not None:
        roots += [t.root for t in ctx.config.targets.values() if isinstance(t, AppTarget)]
    return roots
