"""files.backup: tar of configured paths (excludes, symlinks never followed) → zstd → age → storage.

Secrets (``secret_paths``, e.g. ``.env``) go to a separate archive that is always encrypted; configuration
(nginx, PM2, systemd units) can be a named set of its own through ``preset``.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shlex
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from upkeeper import lazy
from upkeeper.backup.workdir import work_dir
from upkeeper.config.backup import RetentionPolicy, safe_component
from upkeeper.config.targets import AppTarget
from upkeeper.core.task import Finding, Result, Severity, Task, TaskContext, TaskOptions, task
from upkeeper.errors import BackupError, TaskError
from upkeeper.fmt import human_bytes
from upkeeper.tasks.backup._common import (
    Outcome,
    apply_retention,
    env_for,
    object_name,
    write_storage_problems,
)

if TYPE_CHECKING:
    from upkeeper.backup import files as backup_files
    from upkeeper.backup import sets
    from upkeeper.backup import sqlite as sqlite_copies
    from upkeeper.backup.files import Entry, FileList, Walk
    from upkeeper.backup.sets import BackupEnv, SetWriter
    from upkeeper.backup.sqlite import Snapshots
else:
    # The archive itself (tar, the SQLite copies, the pipeline, the storages) is the worker's: 'upkeeper run'
    # imports this module in the CLI for the job's options, and these modules would add ~15 ms to its start
    # before the run is sent (the worker loads them while it waits for the run: lazy.load_all)
    backup_files = lazy.module("upkeeper.backup.files")
    sets = lazy.module("upkeeper.backup.sets")
    sqlite_copies = lazy.module("upkeeper.backup.sqlite")

#: Named configuration sets.  Source: where Debian's nginx, PM2 and systemd keep their configuration.
PRESETS: dict[str, list[str]] = {
    "nginx": ["/etc/nginx"],
    "systemd": ["/etc/systemd/system"],
    "pm2": ["~/.pm2/dump.pm2", "~/.pm2/module_conf.json"],
}


class FilesBackupOptions(TaskOptions):
    set: str | None = Field(None, description="name of this set (the '<database>' part of its storage path); "
                            "default: the preset's name, else 'files'. Source: upkeeper (not set by default)")
    preset: Literal["nginx", "pm2", "systemd"] | None = Field(
        None, description="a named configuration set: nginx (/etc/nginx), systemd (/etc/systemd/system), pm2 "
        "(~/.pm2/dump.pm2, module_conf.json); missing preset paths are skipped with a note. "
        "Source: upkeeper (not set by default)")
    paths: list[str] = Field(default_factory=list, description="files and directories to archive; relative paths "
                             "are under the app target's root (default: the whole root). "
                             "Source: upkeeper (not set by default)")
    exclude: list[str] = Field(default_factory=list, description="patterns left out: a name ('node_modules', "
                               "'*.log') matches anywhere, a path with '/' ('storage/cache', './cache', '/tmp') from each "
                               "root, an absolute path ('/srv/app/storage/cache') that path. "
                               "Source: upkeeper (not set by default)")
    secret_paths: list[str] = Field(default_factory=list, description="files/directories (e.g. '.env') stored in "
                                    "a separate archive that is always encrypted (a config error without backup.encryption), and left out "
                                    "of the main one. "
                                    "Source: upkeeper (not set by default)")
    sqlite_snapshot: bool = Field(
        True, description="archive each SQLite database found (a file starting with SQLite's header) as a "
        "consistent copy made in backup.work_dir with SQLite's online backup API, without its -wal, -shm and "
        "-journal; false archives it as read, torn if it is written meanwhile. Source: upkeeper default "
        "(sqlite.org: copying a database file in use can give a corrupt copy; its backup API does not)")
    sqlite_lock_wait: float = Field(
        30.0, gt=0, le=3600, description="seconds the SQLite snapshot waits for a writer's lock (a transaction "
        "in rollback-journal mode that holds the database locked); past it the database is archived as read, "
        "with its -journal and a warning naming the process holding the lock. Source: upkeeper default "
        "(SQLite's own busy timeout is the application's choice; 30 s lets most transactions end)")
    storages: list[str] | None = Field(None, description="storages to write to (default: backup.storages). "
            "Source: upkeeper (not set by default)")
    retention: RetentionPolicy | None = Field(None, description="retention (default: backup.retention). "
            "Source: upkeeper (not set by default)")

    @model_validator(mode="after")
    def _name(self) -> FilesBackupOptions:
        if self.set is not None and not safe_component(self.set) == self.set:
            raise ValueError(f"set name {self.set!r} may use letters, digits and _ . @ + = - only")
        return self

    @property
    def set_name(self) -> str:
        return self.set or self.preset or "files"


@task
class FilesBackup(Task[FilesBackupOptions]):
    """Archive files with tar (symlinks stored, never followed; a file with several names archived once, its
    other names as hard links; excludes applied) into zstd and age, with a manifest listing every file's size and
    SHA-256.  Secret files go to their own always-encrypted archive."""

    name = "files.backup"
    summary = "tar configured paths → zstd → age → storage; secrets in an always-encrypted archive"
    target_kinds = ("app", "host")
    Options = FilesBackupOptions
    category = "backup"
    exclusive = True

    @classmethod
    def series_key(cls, options: Any) -> tuple[str, str] | None:
        return ("set", safe_component(options.set_name)) if isinstance(options, FilesBackupOptions) else None

    @classmethod
    def config_problems(cls, options: Any, config: Any) -> list[tuple[str, str, str]]:
        if not isinstance(options, FilesBackupOptions):
            return []
        problems = write_storage_problems(options.storages, config)
        if options.secret_paths and config.backup.encryption_settings() is None:
            how = "'none'" if config.backup.unencrypted_explicit else "not configured"
            problems.append(("secret_paths", f"secret_paths are always stored encrypted, but backup.encryption is "
                             f"{how}: every run would fail",
                             "Try: set backup -> encryption -> recipients (age public keys), or list the files "
                             "under 'paths' instead"))
        return problems

    @classmethod
    def config_notes(cls, options: Any, config: Any, target_name: str | None, target: Any
                     ) -> list[tuple[str, str, str]]:
        """A backed-up path that holds a local storage this job writes to (left out of each backup at run
        time), or upkeeper's own SQLite history database (written during the backup)."""
        if not isinstance(options, FilesBackupOptions):
            return []
        root = Path(target.root) if isinstance(target, AppTarget) else None
        trees: list[tuple[str, str]] = []  # (option, real path)
        for field, items in (("paths", options.paths), ("preset", PRESETS[options.preset] if options.preset else [])):
            for item in items:
                p = Path(os.path.expanduser(item))
                if p.is_absolute() or root is not None:
                    trees.append((field, os.path.realpath(root / p if root is not None else p)))
        if not options.paths and not options.preset and root is not None:
            trees.append(("paths", os.path.realpath(root)))
        notes: list[tuple[str, str, str]] = []
        names = options.storages if options.storages is not None else config.backup.storages
        storages = {n: os.path.realpath(os.path.expanduser(st.path)) for n, st in config.storages.items()
                    if (names is None or n in names) and getattr(st, "kind", None) == "local"}  # None: all
        history = _history_file(config)
        for field, tree in trees:
            for n, d in storages.items():
                if _inside(d, tree) and not _inside(tree, d):  # (a path in the storage: refused at run time)
                    notes.append((field, f"{tree} holds the directory of storage {n!r} ({d}), which this job "
                                  "writes its backups to: it is left out of each backup",
                                  "exclude it to say so, or move the storage out of the tree"))
            if history is not None and _inside(history, tree):
                if options.sqlite_snapshot:
                    notes.append((field, f"{tree} holds upkeeper's history database ({history}), written during "
                                  "the backup: it is archived as a consistent copy (sqlite_snapshot)",
                                  "exclude it if it need not be in this backup"))
                else:
                    notes.append((field, f"{tree} holds upkeeper's history database ({history}), written during "
                                  "the backup, and sqlite_snapshot is false: it is archived as read, possibly torn",
                                  "set sqlite_snapshot: true, or exclude it"))
        return notes

    def run(self, ctx: TaskContext, options: FilesBackupOptions) -> Result:
        target = ctx.require_target()
        target_name = ctx.target_name or "host"
        self._check_series(ctx, target_name, options)
        root = Path(target.root) if isinstance(target, AppTarget) else None
        t0 = time.monotonic()
        findings: list[Finding] = []
        paths = self._resolve(options.paths, root, options.preset is None, findings, "paths")
        if options.preset:
            paths += self._resolve(PRESETS[options.preset], root, False, findings, "preset")
        elif not options.paths:
            if root is None:
                raise TaskError("files.backup on a host target needs 'paths' or a 'preset'",
                                "Try: options: {preset: nginx} or {paths: [/etc/myapp]}", permanent=True)
            if not root.exists():
                what = _unresolved(root) if os.path.lexists(root) else "does not exist"
                raise TaskError(f"the root of target {target_name!r}, {root}, {what}",
                                "Try: fix the target's 'root', or give the job 'paths'", permanent=True)
            paths = [root]
        secrets = self._resolve(options.secret_paths, root, False, findings, "secret_paths")
        if not paths and not secrets:
            raise TaskError("nothing to back up: none of the configured paths exists",
                            "Try: check the job's paths/preset", permanent=True)
        secret_walk = backup_files.walk(secrets, [])  # a few files, listed first: the main walk leaves them out
        # by real path: through an app root that is a symlink, the main walk reaches .env by another name
        secret_set = {e.real for e in secret_walk.entries}
        main_walk = backup_files.Walk()  # what the main walk skipped or saw change; its entries are streamed, not kept

        env = env_for(ctx, options.storages)
        work = contextlib.ExitStack()
        try:
            # as tar leaves out the archive it writes: a local storage inside the tree (root /srv, storage
            # /srv/backups) would put every earlier backup, and this one's partial upload, into each new one
            own = _storage_dirs(env)
            _refuse_paths_in_storages(paths, own, target_name)
            sqlite: Snapshots | None = None
            own_tmp = ""
            if options.sqlite_snapshot:
                tmp = work.enter_context(work_dir(env.settings, "upkeeper-sqlite-"))
                sqlite = sqlite_copies.Snapshots(tmp, options.sqlite_lock_wait)
                own_tmp = os.path.realpath(tmp)  # (a work_dir inside the tree: its copies are not archived)
        except BaseException:
            work.close()
            env.close()
            raise

        def skip(real: str) -> bool:
            if real in secret_set:
                return True
            if sqlite is not None and real == own_tmp:
                return True
            if real in own:
                findings.append(Finding(
                    "backup.file_skipped", Severity.INFO, real,
                    f"not archived: the directory of storage {own[real]!r}, which this backup is written to"))
                return True
            return False

        main_entries = _without_secret_links(backup_files.iter_walk(paths, options.exclude, skip=skip, out=main_walk),
                                             secret_walk.entries)
        out = Outcome("files", findings=findings)
        try:
            if secret_walk.entries and env.encryption is None:
                raise TaskError("secret_paths must be encrypted, but backup.encryption is not configured",
                                "Try: set backup -> encryption -> recipients (age public keys)", permanent=True)
            writer = sets.SetWriter(env, "files", target_name, safe_component(options.set_name))
            try:
                archives: dict[str, dict[str, FileList]] = {}
                as_read: list[dict[str, str]] = []  # the SQLite files archived as read, for the manifest
                first = next(main_entries, None)
                if first is not None:
                    name = object_name("files.tar", env)
                    archives[name] = {"files": self._archive(ctx, writer, name, "files",
                                                             itertools.chain([first], main_entries), True,
                                                             findings, main_walk, sqlite, as_read)}
                if secret_walk.entries:
                    name = object_name("secrets.tar", env)
                    # sizes only: plaintext hashes of secrets in a readable manifest would leak guessable values
                    archives[name] = {"files": self._archive(ctx, writer, name, "secrets", secret_walk.entries,
                                                             False, findings, secret_walk, sqlite, as_read)}
                _walk_findings(findings, main_walk, secret_walk)
                _sqlite_findings(findings, sqlite)
                if not archives:
                    # (excludes never apply to a configured path itself): each is a socket, FIFO or device
                    raise BackupError("nothing to archive: no configured path is a regular file, directory or "
                                      f"symlink ({', '.join(map(str, paths + secrets))}); sockets, FIFOs and "
                                      "devices are never archived", "Try: fix the job's paths")
                n_files = sum(a["files"].files for a in archives.values())
                if n_files == 0:  # like an empty dump: most likely a wrong path or an exclude that takes all
                    findings.append(Finding(
                        "backup.empty", Severity.WARNING, options.set_name,
                        "no file archived: nothing but directories and symlinks under "
                        f"{', '.join(map(str, paths + secrets))} once excludes are applied",
                        "check the job's paths and exclude"))
                details: dict[str, Any] = {"paths": [str(p) for p in paths], "secret_paths": [str(p) for p in secrets],
                           "exclude": options.exclude, "preset": options.preset, "files": n_files,
                           "archives": archives}
                if sqlite is not None:
                    # each SQLite file archived as read (possibly torn), so that show, verify and restore say so;
                    # an empty list: every SQLite file found is a consistent copy (no list: none was looked for)
                    details[sqlite_copies.MANIFEST_KEY] = as_read
                manifest = writer.commit(details)
                # stored: from here the manifest in memory keeps the lists' lengths only (as the catalog does),
                # not a line a file through the retention that reads the series' manifests
                details["archives"] = {n: {"files_listed": len(a["files"])} for n, a in archives.items()}
                del archives
            except Exception as exc:
                _walk_findings(findings, main_walk, secret_walk)
                _sqlite_findings(findings, sqlite)
                writer.abort()
                out.fail(options.set_name, exc, "backup.failed")
            except BaseException:  # a stop (SIGTERM, Ctrl-C): the objects already stored go now, not at a prune
                writer.abort()
                raise
            else:
                out.manifests.append(manifest)
                ctx.log.info("backup %s of %s: %d file(s), %s stored", manifest.id, options.set_name, n_files,
                             human_bytes(manifest.size))
                report = apply_retention(ctx, env, manifest, options.retention or env.settings.retention,
                                         out.findings)
                if report is not None:
                    out.pruned += len(report.deleted)
        finally:
            work.close()
            env.close()
        return out.result(time.monotonic() - t0)

    def _check_series(self, ctx: TaskContext, target_name: str, options: FilesBackupOptions) -> None:
        """Run-time guard (config load rejects this too): another files.backup job on this target writing
        the same set with other options would have its backups deleted by this run's retention."""
        if ctx.config is None:
            return
        mine = safe_component(options.set_name)
        for name, jc in ctx.config.jobs.items():
            if name == ctx.job or jc.task != self.name or (jc.target or "host") != target_name:
                continue
            try:
                theirs = FilesBackupOptions.model_validate(jc.options)
            except ValueError:
                continue
            if safe_component(theirs.set_name) == mine and theirs != options:
                raise TaskError(f"job {name!r} also writes set {mine!r} on target {target_name!r} with other "
                                "options; this run's retention would delete its backups",
                                f"Try: give each job a distinct 'set' (e.g. set: {ctx.job})", permanent=True)

    @staticmethod
    def _resolve(items: list[str], root: Path | None, required: bool, findings: list[Finding], field: str
                 ) -> list[Path]:
        out = []
        for item in items:
            p = Path(os.path.expanduser(item))
            if not p.is_absolute():
                if root is None:
                    raise TaskError(f"{field}: {item!r} is relative but the target has no root",
                                    "Try: absolute paths on host targets", permanent=True)
                p = root / p
            if not os.path.lexists(p):
                if required:
                    raise TaskError(f"{field}: {p} does not exist", "Try: fix the job's paths", permanent=True)
                findings.append(Finding("backup.path_missing", Severity.INFO, str(p), "not present; skipped"))
                continue
            if not p.exists():  # a symlink (or one above it) to nothing, or a loop: nothing to archive
                what = _unresolved(p)
                if required:
                    raise TaskError(f"{field}: {p} {what}", "Try: fix the link, or the job's paths", permanent=True)
                findings.append(Finding("backup.path_missing", Severity.INFO, str(p), f"{what}; skipped"))
                continue
            out.append(p)
        return out

    @staticmethod
    def _archive(ctx: TaskContext, writer: SetWriter, name: str, role: str, entries: Iterable[Entry], hashes: bool,
                 findings: list[Finding], walked: Walk | None = None, sqlite: Snapshots | None = None,
                 as_read: list[dict[str, str]] | None = None) -> FileList:
        ctx.progress(f"archiving into {name}", None)
        upload = writer.upload(name, role=role, always_encrypt=role == "secrets")
        try:
            changed: list[tuple[str, str]] = []
            listed = backup_files.write_tar(entries, upload.write, hashes=hashes, changed=changed,
                               attrs=walked.attrs if walked is not None else None, sqlite=sqlite)
        except BaseException:
            upload.abort()
            raise
        for path, what in changed:
            findings.append(Finding("backup.file_changed", Severity.WARNING, path, what))
        if sqlite is not None:
            if as_read is not None:
                as_read.extend({"archive": name, "path": p, "reason": why} for p, why in sqlite.as_read)
            sqlite.as_read = []
        writer.add(upload.finish())
        return listed


def _unresolved(p: Path) -> str:
    """Why ``p``, which :func:`os.path.lexists`, does not exist once its symlinks are followed."""
    try:
        os.stat(p)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink that never resolves (a loop)"
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            return f"is a symlink to {os.path.realpath(p)}, which cannot be reached ({exc.strerror or exc})"
    return f"is a symlink to {os.path.realpath(p)}, which does not exist"


def _inside(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def _history_file(config: Any) -> str | None:
    """The real path of upkeeper's history database if it is a SQLite file (as :func:`history_url` reads the
    setting)."""
    from upkeeper.core.history import default_history_path

    setting = config.history
    if not setting:
        return os.path.realpath(default_history_path())
    if setting.startswith(("postgres", "postgresql")):
        return None
    if setting.startswith("sqlite:"):
        if not setting.startswith("sqlite:///"):
            return None
        setting = setting.removeprefix("sqlite:///")
    p = Path(setting).expanduser()
    if not p.is_absolute() and config.source is not None:
        p = config.source.parent / p
    return os.path.realpath(p)


def _storage_dirs(env: BackupEnv) -> dict[str, str]:
    """{real path: storage name} of the local storages the backup is written to."""
    from upkeeper.storage.local import LocalStorage

    return {os.path.realpath(s.root): s.name for s in env.storages if isinstance(s, LocalStorage)}


def _refuse_paths_in_storages(paths: list[Path], own: dict[str, str], target: str) -> None:
    """A configured path that is such a storage's directory, or lies in the part of it this target's backups
    go to, would archive the backups before it (a path elsewhere in it, say /data/uploads beside a storage's
    /data/web, is the admin's choice)."""
    for p in paths:
        real = os.path.realpath(p)
        for d, name in own.items():
            mine = os.path.realpath(os.path.join(d, target))
            if real in (d, mine) or real.startswith(mine.rstrip("/") + "/"):
                raise TaskError(f"paths: {p} is in the directory of storage {name!r} ({d}) this job writes its "
                                "backups to: each backup would hold the ones before it",
                                "Try: remove it from the job's paths, or write this job to another storage "
                                "(its 'storages' option)", permanent=True)


def _walk_findings(findings: list[Finding], *walks: Walk) -> None:
    """What the walks skipped or saw change (once: after the archives, or when they failed)."""
    attrs = backup_files.Unarchived()
    for w in walks:
        for s in w.skipped:
            findings.append(Finding("backup.file_skipped", Severity.INFO, s, "not archived (special file)"))
        attrs.count += w.attrs.count
        attrs.examples += w.attrs.examples
        w.attrs = backup_files.Unarchived()
        for path, what in w.changed:
            findings.append(Finding("backup.file_changed", Severity.WARNING, path, what))
        w.skipped, w.changed = [], []
    if attrs.count:
        named = "; ".join(f"{p}: {', '.join(names)}" for p, names in attrs.examples[:3])
        findings.append(Finding(
            "backup.attrs_not_archived", Severity.INFO, f"{attrs.count} file(s) or directories",
            f"extended attributes other than user.*, file capabilities and POSIX ACLs (which are archived) are "
            f"not: a restore gives these back without them (e.g. {named})",
            "after a restore, set them again (setfattr); see docs/backups.md",
            value=float(attrs.count)))


def _sqlite_findings(findings: list[Finding], sqlite: Snapshots | None) -> None:
    """The SQLite databases archived as consistent copies (a note each), and those no copy could be made of (a
    warning each): once, after the archives or when they failed."""
    if sqlite is None:
        return
    left_out: dict[str, list[str]] = {}
    for p in sqlite.skipped:
        left_out.setdefault(p.rsplit("-", 1)[0], []).append(os.path.basename(p))
    for path, how in sqlite.taken:
        siblings = left_out.get(path)
        findings.append(Finding(
            "backup.sqlite_snapshot", Severity.INFO, path,
            f"a SQLite database: archived as a consistent copy ({how})"
            + (f"; {', '.join(siblings)} not archived (the copy holds every transaction committed in them)"
               if siblings else "")))
    for path, why in sqlite.failed:
        findings.append(Finding(
            "backup.sqlite_not_snapshotted", Severity.WARNING, path,
            f"a SQLite database no consistent copy could be made of ({why}): archived as read, with its -wal or "
            "-journal, torn if it was written meanwhile",
            "run the job as a user that can open it with SQLite (for a database in WAL mode: write its -shm), "
            "or stop its writers during the backup; see docs/backups.md"))
    for path, why in sqlite.malformed:
        findings.append(Finding(
            "backup.sqlite_not_snapshotted", Severity.WARNING, path,
            f"starts with SQLite's header but is no well-formed SQLite database ({why}): archived as read, byte "
            "for byte",
            f"if it is a database, check it (sqlite3 {shlex.quote(path)} 'PRAGMA integrity_check') and restore it from an "
            "earlier backup if it is damaged; see docs/backups.md"))
    sqlite.taken, sqlite.failed, sqlite.skipped, sqlite.malformed = [], [], [], []


def _without_secret_links(main: Iterator[Entry], secrets: list[Entry]) -> Iterator[Entry]:
    """The main walk's entries but another name of a secret file (a hard link: ``.env.previous`` made with
    ``ln``, a bind mount), which holds the secret too: it goes into the secrets archive with it (appended to
    ``secrets``, archived after the main one, as a hard link to it), never into the main one (whose manifest
    lists plaintext hashes, and which holds no member a hard link in the secrets archive could refer to)."""
    inodes = {(e.st.st_dev, e.st.st_ino) for e in secrets if e.kind == "file" and e.st is not None}
    for e in main:
        if inodes and e.kind == "file" and e.st is not None and (e.st.st_dev, e.st.st_ino) in inodes:
            secrets.append(e)
        else:
            yield e
