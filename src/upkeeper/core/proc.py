"""Subprocesses as argv lists, never through a shell; pipelines wired in Python.

Every helper here checks exit codes and keeps stderr, so that a failing
``pg_dump`` can never pass for a good one.  Processes stay in the caller's
process group: when a run times out, the runner kills that whole group, which
takes every child with it.

A child also dies with the process that started it, however that one ends (``kill -9``, the OOM killer):
on Linux it is started with a parent-death signal (SIGTERM, on which pg_dump and pg_restore send the server a
cancel request for their running statements, then exit), see :func:`die_with_parent`.  Otherwise a
``pg_restore`` of a killed ``upkeeper backups restore`` went on filling its temporary database for as long as
the restore took, and a killed verify's on building indexes in its scratch database.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from upkeeper.core.adopted import Adopted, StderrFile
from upkeeper.errors import ProcessError

STDERR_KEEP = 64 * 1024
PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
#: the capacity asked for the pipes a stream of data goes through (a dump's stdout, age's stdin and stdout):
#: Linux's default of 64 KiB makes the writer stop whenever the reader is busy for longer than 64 KiB take
#: (compressing a chunk, say) and wakes each side every 64 KiB; 1 MiB is the most an unprivileged process may ask
#: for by default (/proc/sys/fs/pipe-max-size)
STREAM_PIPE_SIZE = 1 << 20


#: the longest pause of :meth:`Spawned.iter_views` gathering a writer's small writes in the pipe
GATHER_PAUSE_MAX = 0.002
#: :meth:`Spawned.iter_views` lets 1/GATHER_FRACTION of the pipe fill before it reads again (the rest is room for
#: the writer while the reader waits for a CPU, on a busy machine)
GATHER_FRACTION = 8
#: the narrowest pipe on which :meth:`Spawned.iter_views` gathers
GATHER_MIN_PIPE = 256 << 10


def pipe_size(fd: int) -> int:
    """The capacity of the pipe ``fd`` (either end) in bytes; 0 when it cannot be told (not Linux, not a pipe)."""
    getsz = getattr(fcntl, "F_GETPIPE_SZ", None)
    if getsz is None:
        return 0
    try:
        return int(fcntl.fcntl(fd, getsz))
    except OSError:
        return 0


#: :class:`PacedPipe` writes again once this fraction of its pipe is free
PACE_FRACTION = 2
#: the pause of :class:`PacedPipe` (milliseconds) while its reader drains the pipe: half a pipe of 1 MiB lasts a
#: reader that keeps pace with it up to 256 MB/s (a pg_restore held back by one COPY: well below)
PACE_POLL_MS = 2


class PacedPipe:
    """The writing end of a pipe into a process that reads it in small pieces (pg_restore reads its stdin one
    stdio buffer, 4 KiB, at a time), written so that neither side is woken per piece.

    A plain blocking write into a full pipe sleeps until the reader frees one page, copies a page, sleeps again:
    with a reader slower than the writer (pg_restore, held back by the server's COPY) that is a wake-up of the
    writer per 4 KiB the reader takes (a verify's test restore at pgbench scale 50: ~120,000 context switches,
    against ~700 for a pg_restore reading a file; on 2 CPUs each one takes the CPU from the server's COPY for a
    moment).  Here the pipe is widened (:func:`widen_pipe`) and written only while at least 1/PACE_FRACTION of
    it is free, never more than fits (so no write blocks); otherwise the writer pauses :data:`PACE_POLL_MS`,
    waking at once if the reader goes away (then, as a plain write would: :class:`BrokenPipeError`).  Where the
    fill of the pipe cannot be read (not Linux, not a pipe) it writes as a plain file would."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.fd = f.fileno()
        widen_pipe(self.fd)
        self.size = pipe_size(self.fd)
        self._queued = array.array("i", [0])
        self._poll: Any = None
        if self.size and self._fill() is not None:
            self._poll = select.poll()
            self._poll.register(self.fd, 0)  # POLLERR (the reader gone) is always reported

    def _fill(self) -> int | None:
        try:
            fcntl.ioctl(self.fd, termios.FIONREAD, self._queued)
        except OSError:
            return None
        return int(self._queued[0])

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._poll is None:
            self.f.write(data)
            return len(data)
        view = memoryview(data).cast("B")
        total = len(view)
        want = self.size // PACE_FRACTION
        while view:
            room = self.size - (self._fill() or 0)
            if room < min(len(view), want):
                if self._poll.poll(PACE_POLL_MS):
                    raise BrokenPipeError(errno.EPIPE, "the reading end of the pipe is closed")
                continue
            view = view[os.write(self.fd, view[:room]):]
        return total

    def close(self) -> None:
        self.f.close()


def widen_pipe(f: IO[bytes] | int | None, size: int = STREAM_PIPE_SIZE) -> None:
    """Ask for a pipe of ``size`` bytes (``f``: either end, a file object or a descriptor).  Best effort: where
    the system refuses (a lower pipe-max-size, the user's pipe-user-pages-soft used up, not Linux, not a pipe)
    the pipe keeps its size and works as before."""
    setsz = getattr(fcntl, "F_SETPIPE_SZ", None)
    if f is None or setsz is None:
        return
    with contextlib.suppress(OSError, ValueError):
        fcntl.fcntl(f if isinstance(f, int) else f.fileno(), setsz, size)


@dataclass
class ProcResult:
    argv: list[str]
    returncode: int
    stdout: bytes = b""
    stderr: str = ""
    duration: float = 0.0

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")


_PR_SET_PDEATHSIG = 1
_prctl: Any = None


def _load_prctl() -> Any:
    """libc's ``prctl``, loaded in the parent (never between fork and exec); None where there is none."""
    global _prctl
    if _prctl is None:
        _prctl = False
        if sys.platform.startswith("linux"):
            import ctypes  # here, not at import: the CLI loads this module but starts no child itself

            try:
                fn = ctypes.CDLL(None, use_errno=True).prctl
            except (OSError, AttributeError):
                return None
            fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
            fn.restype = ctypes.c_int
            _prctl = fn
    return _prctl or None


def die_with_parent(then: Callable[[], None] | None = None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child SIGTERMed when this process dies (``PR_SET_PDEATHSIG``), followed by
    ``then`` if given; None (no ``preexec_fn``) off Linux.

    The signal is armed between fork and exec and survives the exec; a child whose parent died before it was
    armed exits at once.  The kernel sends it when the *thread* that started the child ends, so a child must be
    started by a thread that outlives it (:func:`run` waits for its child; every :func:`spawn` caller waits for
    its process before its thread returns).  Only this direct child is armed: its own children (pg_restore's
    parallel workers) end when it does, and the runner's process-group kill remains the backstop.
    """
    prctl = _load_prctl()
    if prctl is None:
        return then
    parent = os.getpid()
    sig = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # our parent is already gone: nobody is left to read or reap us
            os._exit(128 + sig)
        if then is not None:
            then()

    return preexec


def which(name: str, extra_dirs: Sequence[str | Path] = ()) -> str | None:
    """Find an executable in ``extra_dirs`` first, then on PATH."""
    for d in extra_dirs:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which(name)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _tail(text: str, lines: int = 8) -> str:
    parts = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(parts[-lines:])


def _env(env: Mapping[str, str] | None, extra_env: Mapping[str, str] | None) -> dict[str, str]:
    base = dict(os.environ if env is None else env)
    if extra_env:
        base.update(extra_env)
    return base


class _StderrCollector(threading.Thread):
    """Drains a stderr pipe into a bounded buffer (the tail is what explains a failure)."""

    def __init__(self, stream: IO[bytes], on_line: Any = None) -> None:
        super().__init__(daemon=True, name="stderr-collector")
        self.stream = stream
        self.buf = bytearray()
        self.total = 0
        self.on_line = on_line

    def run(self) -> None:
        try:
            for chunk in iter(lambda: self.stream.readline(), b""):
                self.total += len(chunk)
                self.buf.extend(chunk)
                if len(self.buf) > STDERR_KEEP:
                    del self.buf[: len(self.buf) - STDERR_KEEP]
                if self.on_line is not None:
                    try:
                        self.on_line(chunk.decode("utf-8", errors="replace").rstrip("\n"))
                    except Exception:
                        pass
        except (OSError, ValueError):
            pass
        finally:
            try:
                self.stream.close()
            except OSError:
                pass

    @property
    def text(self) -> str:
        from upkeeper.redact import redact

        return redact(self.buf.decode("utf-8", errors="replace"))


def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float | None = None,
    check: bool = True,
    stdout: int | IO[bytes] | None = PIPE,
) -> ProcResult:
    """Run ``argv`` to completion.  Raises :class:`ProcessError` on a non-zero exit when ``check``."""
    from upkeeper.redact import redact

    argv = [str(a) for a in argv]
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=PIPE if input is not None else DEVNULL,
            stdout=stdout,
            stderr=PIPE,
            env=_env(env, extra_env),
            cwd=cwd,
            preexec_fn=die_with_parent(),
        )
    except FileNotFoundError:
        raise ProcessError(argv[0], f"{argv[0]}: command not found", hint=f"Try: install {Path(argv[0]).name}") from None
    except PermissionError as exc:
        raise ProcessError(argv[0], f"{argv[0]}: cannot execute ({exc.strerror})") from None
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise ProcessError(
            argv[0],
            f"{Path(argv[0]).name} timed out after {timeout:g}s",
            returncode=proc.returncode,
            stderr=redact(err.decode("utf-8", errors="replace")),
        ) from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    result = ProcResult(
        argv=argv,
        returncode=proc.returncode,
        stdout=out or b"",
        stderr=redact((err or b"").decode("utf-8", errors="replace")),
        duration=time.monotonic() - start,
    )
    if check and proc.returncode != 0:
        raise failure(result)
    return result


def failure(result: ProcResult) -> ProcessError:
    name = Path(result.argv[0]).name
    tail = _tail(result.stderr)
    msg = f"{name} {describe_exit(result.returncode)}"
    if tail:
        msg += f": {tail}"
    return ProcessError(result.argv[0], msg, returncode=result.returncode, stderr=result.stderr)


@dataclass
class Spawned:
    """A running process whose stdout the caller streams; stderr is collected in the background."""

    argv: list[str]
    popen: subprocess.Popen[bytes] | Adopted
    collector: _StderrCollector | StderrFile
    started: float = field(default_factory=time.monotonic)

    @property
    def stdout(self) -> IO[bytes]:
        assert self.popen.stdout is not None
        return self.popen.stdout

    @property
    def stdin(self) -> IO[bytes]:
        assert self.popen.stdin is not None
        return self.popen.stdin

    def iter_chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        read = self.stdout.read
        while True:
            chunk = read(size)
            if not chunk:
                return
            yield chunk

    def iter_views(self, size: int = 1 << 20, *, gather: bool = False) -> Iterator[memoryview]:
        """stdout as it comes, in views of one buffer of ``size`` bytes read into again for the next one: each is
        valid until the next is asked for (copy what must outlive it).  No new buffer per chunk (a fresh 1 MiB
        is a fresh mapping, whose pages the kernel faults in and zeroes first), no copy beyond the kernel's.
        Call it before anything reads ``stdout`` another way (it reads the pipe itself, past the file
        object's buffer).

        ``gather``: a writer that writes in small pieces (pg_dump: one stdio buffer of 4-8 KiB at a time) would
        hand a reader that keeps up one piece per read, each waking it and costing a pass through the caller's
        loop (pg_dump's 530 MB at scale 50: ~80,000 reads of ~7 KiB).  After a read of less than an eighth of the
        pipe (:data:`GATHER_FRACTION`), the reader pauses (at most :data:`GATHER_PAUSE_MAX`, less the faster the
        data came, so that about an eighth of the pipe fills meanwhile and the writer never waits for room): the
        pieces gather in the pipe and are read a hundred KiB and more at a time, with no wake-up of the reader per
        write.  Only on a pipe of at least :data:`GATHER_MIN_PIPE` (see :func:`widen_pipe`): on a narrow one the
        writer would wait."""
        buf = bytearray(size)
        view = memoryview(buf)
        fd = self.stdout.fileno()
        readv = os.readv
        low = min(size, pipe_size(fd)) // GATHER_FRACTION if gather else 0
        if low < GATHER_MIN_PIPE // GATHER_FRACTION:
            while True:
                n = readv(fd, [buf])
                if not n:
                    return
                yield view[:n]
        clock, sleep = time.monotonic, time.sleep
        last = clock()
        while True:
            n = readv(fd, [buf])
            now = clock()
            if not n:
                return
            yield view[:n]
            if n < low:  # n bytes came since the last read: at that rate, an eighth of the pipe fills in the pause
                sleep(min(GATHER_PAUSE_MAX, low * (now - last) / n))
            last = now

    def wait(self, timeout: float | None = None, check: bool = True) -> ProcResult:
        try:
            rc = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = self.popen.wait()
            self.collector.join(timeout=5)
            raise ProcessError(
                self.argv[0],
                f"{Path(self.argv[0]).name} timed out",
                returncode=rc,
                stderr=self.collector.text,
            ) from None
        self.collector.join(timeout=10)
        result = ProcResult(
            argv=self.argv, returncode=rc, stderr=self.collector.text, duration=time.monotonic() - self.started
        )
        if check and rc != 0:
            raise failure(result)
        return result

    def kill(self) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.kill()
            except ProcessLookupError:
                pass

    def __enter__(self) -> Spawned:
        return self

    def __exit__(self, *exc: object) -> None:
        # Leaving the block early (an exception) must not leave a process behind.
        if self.popen.poll() is None:
            self.kill()
            self.popen.wait()
        for s in (self.popen.stdin, self.popen.stdout):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self.collector.join(timeout=5)
        if isinstance(self.collector, StderrFile):
            self.collector.close()


def spawn(
    argv: Sequence[str],
    *,
    stdin: int | IO[bytes] | None = DEVNULL,
    stdout: int | IO[bytes] | None = PIPE,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    on_stderr_line: Any = None,
    stderr_file: bool = False,
) -> Spawned:
    """Start ``argv`` and return it running; use as a context manager and call ``wait()``.

    ``stderr_file``: stderr goes to an unlinked temporary file instead of a pipe drained by a thread (its tail is
    read back when asked for), and the process leads a process group of its own (the terminal's Ctrl-C is this
    process's to act on, as for the children of a worker, which runs in a session of its own); for a process started
    before this one forks a worker that drives it (see :mod:`upkeeper.core.adopted`)."""
    argv = [str(a) for a in argv]
    err: Any = PIPE
    if stderr_file:
        import tempfile

        err = tempfile.TemporaryFile(prefix="upkeeper-stderr-")  # noqa: SIM115 - the Spawned owns it (closed on exit)
    try:
        popen = subprocess.Popen(
            argv, stdin=stdin, stdout=stdout, stderr=err, env=_env(env, extra_env), cwd=cwd,
            preexec_fn=die_with_parent(), process_group=0 if stderr_file else None,
        )
    except FileNotFoundError:
        if stderr_file:
            err.close()
        raise ProcessError(argv[0], f"{argv[0]}: command not found", hint=f"Try: install {Path(argv[0]).name}") from None
    except BaseException:
        if stderr_file:
            err.close()
        raise
    if stderr_file:
        return Spawned(argv=argv, popen=popen, collector=StderrFile(err))
    assert popen.stderr is not None
    collector = _StderrCollector(popen.stderr, on_stderr_line)
    collector.start()
    return Spawned(argv=argv, popen=popen, collector=collector)


def pipeline(
    argvs: Sequence[Sequence[str]],
    *,
    stdout: int | IO[bytes] | None = PIPE,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> list[ProcResult]:
    """Run ``a | b | c`` without a shell.  Every stage's exit code is checked (like ``pipefail``).

    The first failing stage (in pipeline order) is the error reported.  The last
    stage's stdout is returned in the last result when ``stdout`` is PIPE.
    """
    if not argvs:
        raise ValueError("empty pipeline")
    procs: list[Spawned] = []
    prev: IO[bytes] | None = None
    try:
        for i, argv in enumerate(argvs):
            last = i == len(argvs) - 1
            sp = spawn(argv, stdin=prev if prev is not None else DEVNULL, stdout=stdout if last else PIPE,
                       env=env, extra_env=extra_env)
            if prev is not None:
                prev.close()  # the next stage owns it now; SIGPIPE reaches the writer if the reader dies
            prev = None if last else sp.popen.stdout
            procs.append(sp)
        out = b""
        lastp = procs[-1]
        if stdout == PIPE and lastp.popen.stdout is not None:
            out = lastp.popen.stdout.read()
        deadline = None if timeout is None else time.monotonic() + timeout
        results = []
        for sp in procs:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            results.append(sp.wait(timeout=remaining, check=False))
        results[-1].stdout = out
    finally:
        for sp in procs:
            sp.__exit__(None, None, None)
    if check:
        for r in results:
            if r.returncode != 0:
                raise failure(r)
    return results


def kill_process_group(pgid: int, grace: float = 3.0) -> None:
    """SIGTERM a whole process group, then SIGKILL what is left after ``grace`` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
