"""Log rotation that loses no line while the application keeps writing.

Two methods, as in logrotate:

* **reopen** — rename the log, then make the app reopen it (a signal or a
  command).  Lines written before the app reopens land in the renamed file
  through its still-open descriptor, so nothing is lost.  The renamed file is
  compressed only once no process holds it open for writing; if the app has
  not let go after ``reopen_wait``, it stays uncompressed and a later run
  compresses it (logrotate's ``delaycompress``).
* **copytruncate** — for apps that cannot reopen: copy the log, then truncate
  it in place.  logrotate documents that lines written between the copy and
  the truncation are lost.  upkeeper closes that window: the bulk is copied
  while the app runs, then the processes writing the file are paused
  (SIGSTOP) for the few milliseconds it takes to copy the tail, end the copy
  and truncate, and resumed (SIGCONT).  The log is truncated only once the copy
  is complete.  Writers must append (O_APPEND, as every logger
  does), so that after the truncation they continue at the new end.

Rotated files are named ``<log>.<YYYYmmdd-HHMMSS>`` and compressed with gzip
into ``<log>.<stamp>.gz`` through a ``.partial`` file renamed when complete.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import signal
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

CHUNK = 1 << 20
#: gzip level: logrotate's default compressoptions for gzip (-6); Python's GzipFile would use 9
GZIP_LEVEL = 6
PARTIAL = ".partial"
#: how long to wait for a paused writer to actually stop
STOP_WAIT_S = 2.0


@dataclass(frozen=True)
class Note:
    """Something a rotation says about itself: what happened, whether it needs a change (a warning, else for
    information) and which."""

    text: str
    remedy: str
    warning: bool = True


UNPAUSED = Note("copytruncate without pausing the writers: lines written while truncating may be lost",
                "set copytruncate_freeze: true to pause the writers instead", warning=False)
PAUSE_REMEDY = ("run upkeeper where it may pause the app (as root, outside the app's container), or make the app "
                "reopen its logs (reopen_signal/reopen_command)")


def mount_ns(pid: int | str) -> int | None:
    """The mount namespace of a process (``"self"``: this one); None when it cannot be read."""
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def writers_of(path: Path, among: list[int] | None = None) -> list[int]:
    """Pids of the processes (other than this one) that have ``path`` open for writing.

    Reads /proc directly: psutil's ``open_files()`` parses fdinfo for every descriptor of every
    process (about 0.4 s on a quiet host); here only the matching descriptors' flags are read.
    ``among`` limits the search to those pids.
    """
    return list(writer_flags(path, among))


def writer_flags(path: Path, among: list[int] | None = None) -> dict[int, int]:
    """{pid: open flags} of the processes (other than this one) that have ``path`` open for writing; for a
    process holding it more than once, the flags of the descriptor without O_APPEND if there is one.  Processes
    in another mount namespace are matched by the file itself (device, inode), not by their path for it."""
    target = os.path.realpath(path)
    try:
        st = os.stat(target)
        want: tuple[int, int] | None = (st.st_dev, st.st_ino)
    except OSError:
        want = None
    me = os.getpid()
    mine = mount_ns("self")
    found: dict[int, int] = {}
    names = [str(p) for p in among] if among is not None else [e.name for e in os.scandir("/proc")]
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        fd_dir = f"/proc/{name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        # a process of another mount namespace (a container writing the log through a bind mount) names it by
        # its own path: compare what the descriptor is (device, inode) instead
        foreign = want is not None and mount_ns(name) not in (None, mine)
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") != target:
                    if not foreign:
                        continue
                    fst = os.stat(f"{fd_dir}/{fd}")
                    if (fst.st_dev, fst.st_ino) != want:
                        continue
                with open(f"/proc/{name}/fdinfo/{fd}") as fh:
                    flags = next((int(ln.split()[1], 8) for ln in fh if ln.startswith("flags:")), os.O_WRONLY)
            except (OSError, ValueError):
                continue
            if flags & (os.O_WRONLY | os.O_RDWR):
                found[int(name)] = flags
                if not flags & os.O_APPEND:
                    break
    return found


def rotated_name(path: Path, now: datetime) -> Path:
    stamp = now.strftime("%Y%m%d-%H%M%S")
    base = path.with_name(f"{path.name}.{stamp}")
    candidate, n = base, 0
    while any(Path(f"{candidate}{ext}").exists() for ext in ("", ".gz", ".gz" + PARTIAL)):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _all_stopped(pid: int) -> bool:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True  # gone
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("T", "t", "Z", "X"):
            return False
    return True


@contextlib.contextmanager
def paused(pids: list[int]) -> Iterator[list[int]]:
    """SIGSTOP the processes, wait until every thread has stopped, always SIGCONT them afterwards.

    Yields the pids that did not stop within ``STOP_WAIT_S`` (the init process of a PID namespace, an app
    that is PID 1 in its container, ignores SIGSTOP sent from inside the namespace).
    """
    stopped: list[int] = []
    try:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline and not all(_all_stopped(pid) for pid in stopped):
            time.sleep(0.0005)
        yield [pid for pid in stopped if not _all_stopped(pid)]
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _copy_from(src_fd: int, out: object, start: int) -> int:
    """Copy from ``start`` to the current end of ``src_fd`` into ``out``; returns the new position."""
    pos = start
    while True:
        chunk = os.pread(src_fd, CHUNK, pos)
        if not chunk:
            return pos
        out.write(chunk)  # type: ignore[attr-defined]
        pos += len(chunk)


def _read_from(src_fd: int, start: int) -> bytes:
    """Everything from ``start`` to the current end (kept in memory: only the tail written since the bulk copy)."""
    parts: list[bytes] = []
    pos = start
    while True:
        chunk = os.pread(src_fd, CHUNK, pos)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        pos += len(chunk)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_like(path: Path, st: os.stat_result) -> int:
    """Create ``path`` (a rotated copy of a log) with the log's mode and owner; returns a descriptor for writing.

    Created 0600 and then given the log's mode, so that a log only its owner may read is never readable by
    others, not even for an instant (the umask alone would make the copy 0644, owned by upkeeper's user).
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with contextlib.suppress(PermissionError):
            os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
    except BaseException:
        os.close(fd)
        raise
    return fd


def copytruncate(path: Path, dest: Path, *, compress: bool, freeze: bool) -> tuple[Path, int, list[Note], float]:
    """Copy ``path`` to ``dest`` (gzip-compressed when ``compress``) and truncate it.

    The copy is complete (the tail written, the gzip stream ended) before the log is truncated: a copy that cannot
    be finished (a full disk) leaves the log as it was.  Returns (final path, bytes copied, notes, milliseconds the
    writers were paused).
    """
    final = Path(f"{dest}.gz") if compress else dest
    partial = Path(f"{final}{PARTIAL}")
    notes: list[Note] = []
    paused_ms = 0.0
    truncated = False
    st = os.stat(path)
    src_fd = os.open(path, os.O_RDONLY)
    try:
        with open(_create_like(partial, st), "wb") as raw:
            out = (gzip.GzipFile(filename=path.name, mode="wb", fileobj=raw, mtime=int(st.st_mtime),
                                 compresslevel=GZIP_LEVEL) if compress else raw)
            pos = 0
            tail_read = False

            def finish_and_truncate() -> None:
                """Copy the tail, end the copy, then truncate: a write that fails leaves the log whole."""
                nonlocal pos, tail_read, truncated
                tail = _read_from(src_fd, pos)
                tail_read = True
                out.write(tail)
                pos += len(tail)
                if out is not raw:
                    out.close()  # the end of the gzip stream: the last write that may fail
                raw.flush()
                os.truncate(path, 0)
                truncated = True

            try:
                pos = _copy_from(src_fd, out, 0)  # the bulk, while the app runs
                out.flush()
                raw.flush()
                os.fsync(raw.fileno())
                flags = writer_flags(path)
                writers = list(flags) if freeze else []
                seeking = sorted(pid for pid, f in flags.items() if not f & os.O_APPEND)
                if freeze and writers:
                    try:
                        t0 = time.perf_counter()
                        with paused(writers) as running:  # only a read and a write of the tail, and the truncation
                            finish_and_truncate()
                        paused_ms = (time.perf_counter() - t0) * 1000
                        if running:
                            notes.append(Note(
                                f"could not pause process {', '.join(map(str, running))}: it did not stop within "
                                f"{STOP_WAIT_S:g}s (the init process of a container ignores SIGSTOP from inside it): "
                                "lines written while truncating may be lost", PAUSE_REMEDY))
                    except PermissionError:
                        if tail_read:
                            raise
                        notes.append(Note("could not pause the writers (permission): lines written while "
                                          "truncating may be lost", PAUSE_REMEDY))
                        finish_and_truncate()
                else:
                    finish_and_truncate()
                    if not freeze:
                        notes.append(UNPAUSED)
            finally:
                if out is not raw and not truncated:
                    with contextlib.suppress(OSError):
                        out.close()
            os.fsync(raw.fileno())
        os.utime(partial, (st.st_atime, st.st_mtime))
        os.rename(partial, final)
        if seeking:
            notes.append(Note(
                f"process {', '.join(map(str, seeking))} writes {path.name} without O_APPEND (a '>' redirection, "
                "not '>>'): after the truncation it goes on at its old offset, so the log keeps its size with NUL "
                "bytes where the copied lines were; append ('>>', O_APPEND) or use rotate_method: reopen",
                "make the app append to its log ('>>'), or reopen it (reopen_signal/reopen_command)"))
    except OSError as exc:
        if not truncated:
            with contextlib.suppress(OSError):
                os.unlink(partial)  # the log is whole: the half copy is only in the way
            raise
        # the log's lines are only in the copy now: give it its final name rather than leave a .partial (removed
        # by a later run as an interrupted compression)
        with contextlib.suppress(OSError):
            os.rename(partial, final)
        raise OSError(exc.errno, f"{exc.strerror} after the log was truncated: its lines are in {final.name}, "
                                 "which may be incomplete") from exc
    finally:
        os.close(src_fd)
    return final, pos, notes, paused_ms


def compress_file(path: Path) -> Path:
    """gzip ``path`` into ``path.gz`` (via a .partial file), keep its times, remove the original."""
    final = Path(f"{path}.gz")
    partial = Path(f"{final}{PARTIAL}")
    st = os.stat(path)
    try:
        with open(path, "rb") as src, open(_create_like(partial, st), "wb") as raw:
            with gzip.GzipFile(filename=path.name, mode="wb", fileobj=raw, mtime=int(st.st_mtime),
                               compresslevel=GZIP_LEVEL) as gz:
                shutil.copyfileobj(src, gz, CHUNK)
            raw.flush()
            os.fsync(raw.fileno())
        os.utime(partial, (st.st_atime, st.st_mtime))
        os.rename(partial, final)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(partial)  # the uncompressed file is whole; a later run tries again
        raise
    os.unlink(path)
    return final


def wait_released(path: Path, timeout: float, writers: list[int]) -> bool:
    """Wait until the known writers have let go of ``path``, then confirm that no process holds it."""
    deadline = time.monotonic() + timeout
    pending = list(writers)
    while True:
        pending = writers_of(path, among=pending) if pending else []
        if not pending and not writers_of(path):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


class ReopenFailed(Exception):
    """The app could not be told to reopen its log (the message says whether the rename was undone)."""


def _undo_rename(path: Path, dest: Path) -> bool:
    """Put the renamed log back over the fresh one, if nothing was written to that and nobody holds it."""
    try:
        if os.stat(path).st_size or writers_of(path):
            return False
        os.rename(dest, path)
    except OSError:
        return False
    return True


def reopen_rotate(path: Path, dest: Path, *, reopen: Callable[[list[int]], None], compress: bool,
                  wait_s: float) -> tuple[Path, int, list[Note]]:
    """Rename, recreate, ask the app to reopen, then compress once it has let go of the old file."""
    st = os.stat(path)
    writers = writers_of(path)
    os.rename(path, dest)
    # recreate the log with the same owner and mode (logrotate's 'create'), so an app that dropped
    # privileges can open it again; fchmod, since the umask would take the group's write bit from a 0660 log
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
    except FileExistsError:
        fd = -1  # the app made it already (one that opens its log for each line): its file, its mode
    if fd >= 0:
        try:
            with contextlib.suppress(PermissionError):
                os.fchown(fd, st.st_uid, st.st_gid)
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
        finally:
            os.close(fd)
    try:
        reopen(writers)
    except Exception as exc:
        cause = getattr(exc, "message", None) or getattr(exc, "strerror", None) or str(exc)
        if _undo_rename(path, dest):
            raise ReopenFailed(f"the reopen failed ({cause}); {path.name} was put back, nothing rotated") from exc
        raise ReopenFailed(f"the reopen failed ({cause}) after {path.name} was renamed to {dest.name}: the app may "
                           f"still write to {dest.name}, which is compressed once it lets go") from exc
    size = os.stat(dest).st_size
    if not compress:
        return dest, size, []
    if not wait_released(dest, wait_s, writers):
        return dest, size, [Note(
            f"the app still writes to {dest.name} {wait_s:g}s after the reopen; compressed on a later run",
            "make the app reopen its logs on the signal/command, or set rotate_method: copytruncate")]
    size = os.stat(dest).st_size
    try:
        _fsync_path(dest)
        return compress_file(dest), size, []
    except OSError as exc:  # rotated all the same: the lines are in dest
        return dest, size, [Note(
            f"rotated to {dest.name}, but compressing it failed ({exc.strerror}); a later run compresses it",
            "free space in the log directory")]
