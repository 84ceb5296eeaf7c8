"""File housekeeping for an app: old temp and cache files, rotated logs past their age or count, old releases.

Every deletion goes through :class:`Actions`, which records it (and only
records it in a dry run).  Nothing outside the configured directories is
touched; symlinks are removed, never followed.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upkeeper.fmt import human_bytes
from upkeeper.tasks.app._rotate import mount_ns

#: rotated siblings of a log: ours (app.log.20261123-031500[-1][.gz]) and logrotate's (app.log.1[.gz],
#: app.log-20261123[.gz], and any other dateformat it takes: app.log-2026-11-23, app.log.20261123-1796615234 …)
ROTATED_SUFFIX = re.compile(r"^\.(\d+|\d{8}-\d{6}(-\d+)?)(\.(gz|zst|bz2|xz))?$"
                            r"|^[-._]\d{4}([-_.]?\d{2})+(\.(gz|zst|bz2|xz))?$")
PARTIAL = ".partial"


@dataclass
class Actions:
    dry_run: bool
    done: list[dict[str, Any]] = field(default_factory=list)
    freed: int = 0
    errors: list[str] = field(default_factory=list)

    def record(self, action: str, path: Path | str, **info: Any) -> None:
        self.done.append({"action": action, "path": str(path), **info})

    def remove(self, path: Path, reason: str, size: int) -> None:
        def delete() -> None:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()

        self._remove(path, reason, size, delete)

    def remove_at(self, dir_fd: int, name: str, shown: Path, reason: str, size: int) -> None:
        """Remove the file or symlink ``name`` of the directory open as ``dir_fd`` (never following a symlink)."""
        self._remove(shown, reason, size, lambda: os.unlink(name, dir_fd=dir_fd))

    def _remove(self, shown: Path, reason: str, size: int, delete: Callable[[], None]) -> None:
        """Run ``delete`` (not in a dry run) and record it: gone already counts as done, a failure as an error."""
        if not self.dry_run:
            try:
                delete()
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._failed(shown, reason, size, exc)
                return
        self._done(shown, reason, size)

    def _done(self, path: Path, reason: str, size: int) -> None:
        self.record("remove", path, reason=reason, bytes=size)
        self.freed += size

    def _failed(self, path: Path, reason: str, size: int, exc: OSError) -> None:
        # not counted as removed nor as freed: the summary and metrics say what was done
        self.record("remove", path, reason=reason, bytes=size, ok=False, error=exc.strerror or str(exc))
        self.errors.append(f"cannot remove {path}: {exc.strerror}")

    def count(self, action: str) -> int:
        return sum(1 for a in self.done if a["action"] == action and a.get("ok", True))


def tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for n in files:
            try:
                total += os.lstat(os.path.join(root, n)).st_size
            except OSError:
                pass
    return total


#: directories that hold other programs' files (or every app's): never pruned as an app's temp or cache directory
SYSTEM_DIRS = frozenset(Path(p) for p in (
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/proc", "/root", "/sbin", "/sys", "/usr",
    "/usr/local", "/usr/share", "/var", "/var/lib", "/var/log", "/var/cache", "/var/tmp", "/var/www", "/var/spool",
    "/var/mail", "/tmp", "/run", "/opt", "/srv", "/mnt", "/media", "/snap"))


def unsafe_dir(path: Path, root: Path) -> str | None:
    """Why pruning ``path`` would be dangerous (it is the app, or holds it, or is a system directory)."""
    try:
        real = path.resolve()
        app = root.resolve()
    except OSError as exc:
        return f"cannot resolve {path}: {exc.strerror}"
    if real == Path("/") or real == app or app.is_relative_to(real):
        return f"{path} is the application directory or contains it"
    if Path(os.path.normpath(path)).is_relative_to(os.path.normpath(root)) and not real.is_relative_to(app):
        # tmp -> /var/lib/postgresql: a directory of the app on paper, another program's files in fact
        return f"{path} leads out of the application directory through a symlink (to {real})"
    if real in SYSTEM_DIRS:
        return f"{path} is a system directory; name a directory of the app"
    return None


def prune_old_files(top: Path, max_age_s: float, now: float, acts: Actions, reason: str,
                    use_atime: bool, in_use: InUse | None = None) -> dict[str, int]:
    """Delete files under ``top`` older than ``max_age_s``, then the old directories that are empty.

    Every look and every deletion is relative to a descriptor of the directory listed (os.fwalk, unlinkat): the
    app's user, who owns the tree, cannot lead a deletion elsewhere by swapping a subdirectory for a symlink
    between the listing and the deletion (upkeeper runs as root).  A file a process holds open (``in_use``: an
    upload still being written, a lock, a database) is old only on paper and stays.  Returns {such file: a pid
    holding it}.
    """
    held: dict[str, int] = {}
    if not top.is_dir():
        return held
    # the configured directory itself may be a symlink (checked by unsafe_dir); nothing below it is followed
    # each directory's modification time before anything in it was deleted (which sets it to now): a directory
    # untouched for longer than max_age whose files all go is removed in the same run, not a run later
    listed_mtime: dict[str, float] = {}
    for root, dirs, files, root_fd in os.fwalk(os.path.realpath(top), topdown=False, follow_symlinks=False):
        try:
            listed_mtime[root] = os.fstat(root_fd).st_mtime
        except OSError:
            pass
        try:
            real_root = os.readlink(f"/proc/self/fd/{root_fd}")
        except OSError:
            real_root = os.path.realpath(root)
        subdirs: list[str] = []
        for name in files + dirs:
            try:
                st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(name)
                continue
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                continue
            newest = max(st.st_mtime, st.st_atime) if use_atime else st.st_mtime
            if now - newest <= max_age_s:
                continue
            pid = in_use.holder(os.path.join(real_root, name), st) if in_use and stat.S_ISREG(st.st_mode) else None
            if pid is None and name.endswith(".pid") and stat.S_ISREG(st.st_mode):
                pid = running_pid_file(root_fd, name)
            if pid is not None:
                held[os.path.join(root, name)] = pid
                continue
            acts.remove_at(root_fd, name, Path(root) / name, reason, st.st_size)
        if acts.dry_run:
            continue
        for name in subdirs:  # already walked (bottom-up): empty now if everything in it went
            try:
                mtime = listed_mtime.get(os.path.join(root, name))
                if mtime is None:
                    mtime = os.stat(name, dir_fd=root_fd, follow_symlinks=False).st_mtime
                if now - mtime > max_age_s:
                    os.rmdir(name, dir_fd=root_fd)
            except OSError:
                pass  # not empty, or gone
    return held


def running_pid_file(dir_fd: int, name: str) -> int | None:
    """The pid in pid file ``name`` (in the directory ``dir_fd``) when that process runs, else None.  A server's
    pid file (tmp/pids/server.pid) is written at its start and never touched again, nor held open: old on paper,
    but deleting it leaves the server unmanageable (its stop and restart scripts, a pid_file reopen of ours), so a
    running process's pid file stays.  Rails' tmp:clear leaves tmp/pids alone for the same reason."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        head = os.read(fd, 64)
    except OSError:
        return None
    finally:
        os.close(fd)
    text = head.decode("ascii", errors="replace").split()
    if not text or not text[0].isdigit() or int(text[0]) <= 0:
        return None
    pid = int(text[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # it runs, as another user
    except OverflowError:
        return None
    return pid


def rotated_siblings(log: Path) -> list[Path]:
    """Rotated copies of ``log`` in its directory, newest first (by modification time).

    Only regular files: a directory or a symlink named like a rotated copy is something else (a symlink's
    target may be anywhere, or nowhere).
    """
    out: list[tuple[float, str, Path]] = []
    try:
        entries = list(log.parent.iterdir())
    except OSError:
        return []
    for p in entries:
        if p.name.endswith(PARTIAL):
            continue
        rest = p.name[len(log.name):] if p.name.startswith(log.name) else None
        if rest and ROTATED_SUFFIX.match(rest):
            try:
                st = p.lstat()
            except OSError:  # gone since the listing
                continue
            if stat.S_ISREG(st.st_mode):
                out.append((st.st_mtime, p.name, p))
    return [p for *_key, p in sorted(out, reverse=True)]


def prune_rotated(log: Path, keep: int, max_age_s: float, now: float, acts: Actions,
                  writers: Callable[[Path], list[int]] | None = None) -> dict[str, int]:
    """Delete the rotated copies of ``log`` beyond the newest ``keep`` or older than ``max_age_s``; an uncompressed
    one a process still writes to (``writers``: an app that has not reopened its log yet) stays: its newest lines
    are there.  Returns {such copy: a pid writing it}."""
    held: dict[str, int] = {}
    for i, p in enumerate(rotated_siblings(log)):
        try:
            st = p.lstat()
        except OSError:
            continue
        if (i >= keep or now - st.st_mtime > max_age_s) and writers is not None and not p.name.endswith(
                (".gz", ".zst", ".xz", ".bz2")):
            pids = writers(p)
            if pids:
                held[str(p)] = pids[0]
                continue
        if i >= keep:
            acts.remove(p, f"beyond the newest {keep} rotated logs", st.st_size)
        elif now - st.st_mtime > max_age_s:
            acts.remove(p, "rotated log older than the retention", st.st_size)
    return held


def stale_partials(logs: list[Path], now: float, acts: Actions, min_age_s: float = 3600) -> None:
    """Leftovers of an interrupted compression of one of ``logs`` (never complete, never listed as a rotated log):
    only files named as ours are (a rotated copy's name of one of the logs, then .partial) — another program's
    ``*.partial`` in the log directory (a download, an upload) is not ours to delete."""
    by_dir: dict[Path, set[str]] = {}
    for log in logs:
        by_dir.setdefault(log.parent, set()).add(log.name)
    for d, names in by_dir.items():
        try:
            entries = list(d.glob(f"*{PARTIAL}"))
        except OSError:
            continue
        for p in entries:
            stem = p.name[:-len(PARTIAL)]
            if not any(stem.startswith(n) and ROTATED_SUFFIX.match(stem[len(n):]) for n in names):
                continue
            try:
                st = p.lstat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime > min_age_s:
                acts.remove(p, "left over by an interrupted compression", st.st_size)


def _name_key(name: str) -> tuple[list[int | str], str]:
    """Runs of digits compared as numbers: release 10 comes after release 9 (as text, "10" < "9")."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name))], name


@dataclass
class InUse:
    """What the running processes use: their working directories and programs, and the files they hold open
    (real paths, read from /proc once per run).

    A process in another mount namespace (a container given the release or the uploads directory by a bind
    mount) names them by its own paths (``/app``, not ``/srv/shop/releases/41``): what they are is kept too, as
    (device, inode) — ``stat`` of ``/proc/PID/cwd`` reaches the directory itself whatever the namespace."""

    places: dict[str, int] = field(default_factory=dict)  # cwd, exe, root -> a pid
    open_files: dict[str, int] = field(default_factory=dict)  # file -> a pid
    ids: dict[tuple[int, int], int] = field(default_factory=dict)  # (st_dev, st_ino) of both -> a pid
    foreign: bool = False  # some process lives in another mount namespace: its paths are not ours

    @classmethod
    def scan(cls) -> InUse:
        found = cls()
        me = os.getpid()
        mine = mount_ns("self")
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            pid = int(entry.name)
            ns = mount_ns(pid)
            if ns is not None and ns != mine:
                found.foreign = True
            for link in ("cwd", "exe", "root"):
                found._add(found.places, pid, f"/proc/{pid}/{link}")
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                found._add(found.open_files, pid, f"/proc/{pid}/fd/{fd}")
        return found

    def _add(self, paths: dict[str, int], pid: int, link: str) -> None:
        try:
            paths.setdefault(os.readlink(link), pid)
            st = os.stat(link)
        except OSError:
            return
        self.ids.setdefault((st.st_dev, st.st_ino), pid)

    def holder(self, path: str, st: os.stat_result) -> int | None:
        """A process holding the file ``path`` (``st``: its lstat) open, by its path or by what it is."""
        pid = self.open_files.get(path)
        return pid if pid is not None else self.ids.get((st.st_dev, st.st_ino))

    def user_of_tree(self, top: Path) -> int | None:
        """A process whose working directory or program is under ``top``, or that holds a file there open."""
        real = os.path.realpath(top)
        prefix = real.rstrip("/") + "/"
        for paths in (self.places, self.open_files):
            for path, pid in paths.items():
                if path == real or path.startswith(prefix):
                    return pid
        if not self.foreign:
            return None
        # a process of another mount namespace names the tree by its own paths: look for what it uses in it
        for root, dirs, files, root_fd in os.fwalk(real, follow_symlinks=False):
            if root == real:
                try:
                    st = os.fstat(root_fd)
                except OSError:
                    return None
                if (user := self.ids.get((st.st_dev, st.st_ino))) is not None:
                    return user
            for name in dirs + files:
                try:
                    st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
                except OSError:
                    continue
                if (user := self.ids.get((st.st_dev, st.st_ino))) is not None:
                    return user
        return None


def release_order(releases: list[Path]) -> list[Path]:
    """Newest first: by name when every name is a timestamp or number (Capistrano), else by mtime."""
    if releases and all(r.name[:1].isdigit() for r in releases):
        return sorted(releases, key=lambda r: _name_key(r.name), reverse=True)
    return sorted(releases, key=lambda r: (r.lstat().st_mtime, r.name), reverse=True)


def live_release(releases_dir: Path, current: Path) -> tuple[Path | None, str | None]:
    """The release ``current`` points to, or (None, why it cannot be told)."""
    if not (current.is_symlink() or current.exists()):
        return None, f"{current} does not exist"
    try:
        target = current.resolve()
        top = releases_dir.resolve()
    except OSError as exc:
        return None, f"cannot resolve {current}: {exc.strerror}"
    for parent in (target, *target.parents):
        if parent.parent == top:
            return parent, None
    return None, f"{current} leads to {target}, which is not in {releases_dir}"


def prune_releases(releases_dir: Path, current: Path, keep: int, acts: Actions,
                   in_use: InUse | None = None) -> tuple[int, str | None, dict[str, int]]:
    """Remove all but the newest ``keep`` releases, never the live one nor one a process runs from.

    Returns (kept, live release name, {release still in use beyond ``keep``: a pid using it}).
    """
    if not releases_dir.is_dir():
        return 0, None, {}
    live, _problem = live_release(releases_dir, current)
    entries = [p for p in releases_dir.iterdir() if p.is_dir() or p.is_symlink()]
    ordered = release_order(entries)
    kept = 0
    busy: dict[str, int] = {}
    for i, rel in enumerate(ordered):
        if live is not None and rel.resolve() == live:
            kept += 1
            continue
        if i < keep:
            kept += 1
            continue
        user = in_use.user_of_tree(rel) if in_use is not None and not rel.is_symlink() else None
        if user is not None:  # an old worker still runs from it (a graceful reload, a job started before the deploy)
            busy[rel.name] = user
            kept += 1
            continue
        size = 0 if rel.is_symlink() else tree_size(rel)
        acts.remove(rel, f"older than the newest {keep} releases", size)
    return kept, (live.name if live else None), busy


def describe(acts: Actions) -> str:
    n = acts.count("remove")
    verb = "would remove" if acts.dry_run else "removed"
    return f"{verb} {n} item(s), {human_bytes(acts.freed)}" if n else "nothing to remove"
