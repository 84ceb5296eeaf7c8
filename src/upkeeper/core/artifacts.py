"""Files a run writes that must appear only once its result is recorded (a log task's reports).

A task that runs under the runner (:attr:`upkeeper.core.task.TaskContext.stage_files`) writes such a file
complete under a hidden *pending* name beside its final one (:func:`pending_name`), and says in the
artifact where it goes: ``artifact["staged"] = {"from": PENDING, "copies": [PATH, …]}``.  The runner takes
that entry out (:func:`take_staged`), records the result (and the job state) in one transaction, and only
then renames the file into place and refreshes its copies (a report's ``latest.html``): :func:`publish`.

So a run killed before its result is recorded (kill -9, a timeout, a history that cannot be written)
leaves no file under a final name — a report history knows nothing about, counting lines the next run
reads again — only its hidden pending file, which the task's next run removes; and no file is ever seen
half-written under its final name.  A run recorded but killed before the rename has its pending file
named in its recorded job state, so the next run publishes it (see
:func:`upkeeper.tasks.logs._common.write_reports`): the artifact path in history then exists.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upkeeper.core.task import Result
from upkeeper.errors import TaskError

STAGED = "staged"
PENDING_SUFFIX = ".pending"
#: a report's mode and that of a report directory upkeeper makes: reports hold client addresses, URLs, user
#: agents, error messages and query texts -- readable by upkeeper's user and group (a web server added to that
#: group may serve them), never by every local user, whatever the umask
REPORT_MODE = 0o640
REPORT_DIR_MODE = 0o750


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def report_dir_denied(directory: Path, option: str = "report_dir") -> TaskError | None:
    """Why this user cannot write reports into ``directory`` (making it and its missing parents first), or
    None: the first directory on the way it may not enter, or may not write where it must (a report directory
    made by an upkeeper that once ran as root, used by one that runs as another user).  The error names that
    directory, its owner and mode, and the fixes; ``option`` is the task option that moves the reports."""
    me = _user(os.geteuid())
    chain = [*reversed(directory.parents), directory]
    for i, d in enumerate(chain):
        try:
            st = d.stat()
        except FileNotFoundError:  # it and the rest get made: its parent must be writable
            blocked, need = chain[i - 1], os.W_OK | os.X_OK
        except NotADirectoryError:
            return TaskError(f"report directory {directory}: {chain[i - 1]} is not a directory",
                             f"Try: set {option} to a directory")
        except OSError:  # (EACCES: the parent may not be entered -- found at the parent's turn already)
            return None
        else:
            if not stat.S_ISDIR(st.st_mode):
                return TaskError(f"report directory {directory}: {d} is not a directory",
                                 f"Try: set {option} to a directory")
            need = os.W_OK | os.X_OK if d == directory else os.X_OK
            blocked = d
            if os.access(d, need):
                continue
        if os.access(blocked, need):
            return None
        try:
            bst = blocked.stat()
            whose = f"{_user(bst.st_uid)}'s, mode {stat.S_IMODE(bst.st_mode):04o}"
            owner = _user(bst.st_uid)
        except OSError:
            whose, owner = "cannot be looked at", "its owner"
        what = "write in" if need & os.W_OK else "enter"
        fix = f"chown -R {me} {blocked}, or run upkeeper as {owner}, or set {option} to a directory of {me}'s"
        return TaskError(f"report directory {directory}: {me}, whom upkeeper runs as, may not {what} {blocked} "
                         f"({whose}): {fix}")
    return None


def make_report_dir(directory: Path, option: str = "report_dir") -> None:
    """``directory`` and its missing parents, each made :data:`REPORT_DIR_MODE` (an existing one is left as
    it is: an admin may have opened it to a web server).  A TaskError naming the directory, its owner and the
    fix when this user may not make or write it (:func:`report_dir_denied`)."""
    denied = report_dir_denied(directory, option)
    if denied is not None:
        raise denied
    missing: list[Path] = []
    d = directory
    while not d.exists() and d != d.parent:
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir(REPORT_DIR_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            raise report_dir_denied(directory, option) or TaskError(
                f"report directory {directory}: cannot make {d}: {exc.strerror or exc}",
                f"Try: set {option} to a directory upkeeper's user may write") from None
        if not d.is_dir():
            raise TaskError(f"report directory {directory}: {d} is not a directory", f"Try: set {option} to a directory")


@dataclass
class Staged:
    source: Path  # the complete file, under its pending name
    target: Path  # where it goes once the run is recorded (the artifact's path)
    copies: list[Path] = field(default_factory=list)  # files to refresh with its content then (latest.html)


def pending_name(final: Path) -> Path:
    """``dir/.NAME.pending`` for ``dir/NAME``: hidden, and never matched by a glob of final names."""
    return final.with_name(f".{final.name}{PENDING_SUFFIX}")


def final_name(pending: Path) -> Path | None:
    """The final name of a :func:`pending_name` (None for any other name)."""
    n = pending.name
    if not (n.startswith(".") and n.endswith(PENDING_SUFFIX)) or len(n) <= 1 + len(PENDING_SUFFIX):
        return None
    return pending.with_name(n[1:-len(PENDING_SUFFIX)])


def take_staged(result: Result) -> list[Staged]:
    """Take the staged files out of ``result``'s artifacts (history records only the final paths)."""
    out: list[Staged] = []
    for a in result.artifacts:
        st: Any = a.pop(STAGED, None) if isinstance(a, dict) else None
        if isinstance(st, dict) and st.get("from") and a.get("path"):
            out.append(Staged(Path(st["from"]), Path(a["path"]), [Path(c) for c in st.get("copies") or []]))
    return out


def publish(staged: list[Staged], log: logging.Logger) -> list[str]:
    """Move each staged file into place, then refresh its copies; the problems (logged as warnings)."""
    problems: list[str] = []
    for s in staged:
        try:
            os.replace(s.source, s.target)
        except FileNotFoundError:
            if not s.target.exists():  # else the job's next run published it already
                problems.append(f"{s.source}: gone before it could be renamed to {s.target}")
                continue
        except OSError as exc:
            problems.append(f"{s.source}: cannot rename to {s.target} ({exc.strerror or exc})")
            continue
        for c in s.copies:
            try:
                atomic_write_bytes(c, s.target.read_bytes(), new_mode=REPORT_MODE)
            except OSError as exc:
                problems.append(f"{c}: cannot refresh from {s.target} ({exc.strerror or exc})")
    for p in problems:
        log.warning("%s", p)
    return problems


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None,
                       owner: tuple[int, int] | None = None, *, new_mode: int = 0o666) -> None:
    """Write ``path`` whole or not at all: a temporary file beside it, flushed to disk, renamed over it
    (with owner ``(uid, gid)`` and permission bits ``mode`` when given, before it is renamed; else created
    with ``new_mode`` less the umask, a plain write's mode by default)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)  # a killed write's of a process that had this PID: never its mode
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, new_mode), "wb") as fh:
            if owner is not None:
                os.fchown(fh.fileno(), *owner)
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
