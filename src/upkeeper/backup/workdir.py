"""Private temporary directories for plaintext that cannot be streamed: a directory-format dump, an RDB, a
dump fetched for a parallel restore, a files restore staged inside its destination.

Such a directory may hold a whole database in clear, so one left behind by a killed process (``kill -9``,
OOM, a crash: no ``finally`` runs) must not stay forever.  The process that made it holds an exclusive
``flock`` on the directory for as long as it lives, and the kernel drops that lock when the process dies;
the next upkeeper process that makes a work directory removes every marked one whose lock it can take, and
so does the CLI or daemon whose worker died, as soon as it sees it die (:mod:`upkeeper.core.runner`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from upkeeper.config.backup import BackupSettings
from upkeeper.errors import SetupError
from upkeeper.shield import shielded

log = logging.getLogger(__name__)

PREFIXES = ("upkeeper-dump-", "upkeeper-verify-", "upkeeper-redis-", "upkeeper-restore-", "upkeeper-sqlite-")
#: a files restore's staging directory, inside the directory restored into (:func:`staging_dir`)
STAGING_PREFIX = ".upkeeper-restore-staging-"
#: created before the directory gets its final name, while its lock is already held: only a directory with
#: this marker is ever removed by another process (never one made by an older upkeeper, which held no lock)
MARKER = ".upkeeper-work-dir"


@contextlib.contextmanager
def work_dir(settings: BackupSettings, prefix: str) -> Iterator[Path]:
    """A private (0700) directory under ``backup.work_dir`` (default: the system temp dir), removed at the end;
    directories that killed processes left there are removed first."""
    assert prefix in PREFIXES, prefix
    base = Path(settings.work_dir) if settings.work_dir else Path(tempfile.gettempdir())
    clean_stale(base)
    with contextlib.ExitStack() as stack:
        try:
            d = stack.enter_context(_locked_dir(base, prefix))
        except OSError as exc:
            where = "backup.work_dir" if settings.work_dir else "the system temp directory ($TMPDIR, else /tmp)"
            raise SetupError(f"cannot make a work directory in {base} ({where}): {exc.strerror or exc}; create "
                             "it or set backup.work_dir to a writable directory with room for the plaintext"
                             ) from None
        yield d


@contextlib.contextmanager
def staging_dir(dest: Path) -> Iterator[Path]:
    """A private (0700) directory ``.upkeeper-restore-staging-*`` inside ``dest`` (so on its file system: what
    is extracted there is moved into ``dest`` by renames), removed at the end with whatever it still holds.
    One that a killed restore left in ``dest`` is removed first, as :func:`work_dir` does."""
    clean_stale(dest, (STAGING_PREFIX,))
    with _locked_dir(dest, STAGING_PREFIX) as d:
        yield d


@contextlib.contextmanager
def _locked_dir(base: Path, prefix: str) -> Iterator[Path]:
    """``base/<prefix>XXXX`` (0700), holding :data:`MARKER` and locked for as long as this process lives."""
    tmp = Path(tempfile.mkdtemp(prefix="." + prefix, dir=base))  # a name the sweep does not look at
    fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
    d = tmp.with_name(tmp.name[1:])
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        (tmp / MARKER).touch(mode=0o600)
        os.rename(tmp, d)  # the lock is on the directory itself: it holds across the rename
        yield d
    finally:
        with shielded():  # plaintext: a stop arriving now waits until it is gone
            remove_tree(d)
            remove_tree(tmp)
            os.close(fd)


def remove_tree(path: Path) -> None:
    """``rm -rf path``, also through directories without write permission (a restore extracts directories with
    their archived modes: 0555 ones would keep the plaintext below them)."""
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path):
        return
    for dirpath, dirnames, _files in os.walk(path):  # never into links
        for name in dirnames:
            sub = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                if stat.S_ISDIR(os.lstat(sub).st_mode):
                    os.chmod(sub, 0o700)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def clean_stale(base: Path, prefixes: tuple[str, ...] = PREFIXES) -> list[Path]:
    """Remove the work directories (named with one of ``prefixes``) in ``base`` whose process is gone; returns
    them."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefixes):
            continue
        path = Path(entry.path)
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or not (path / MARKER).is_file():
                continue
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its process is alive
            remove_tree(path)
            removed.append(path)
        finally:
            os.close(fd)
    if removed:
        log.warning("removed %d temporary director%s left by killed runs (they may hold plaintext dumps): %s",
                    len(removed), "y" if len(removed) == 1 else "ies", ", ".join(str(p) for p in removed))
    return removed
