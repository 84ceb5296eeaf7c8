"""SFTP storage with paramiko: key authentication, host keys checked against known_hosts.

A write goes to a temporary name beside the final one (``.NAME.<random>.upkeeper-partial``,
never listed), is drained (every pipelined write acknowledged), fsynced when the server
supports ``fsync@openssh.com``, size-checked, then moved into place with
``posix-rename@openssh.com`` — atomic, replacing an older object.  ``abort()`` removes
the temporary file and the directories its write made, while empty; a crash leaves only a
temporary file that ``list`` ignores (``clean_partials`` removes it and the directories it
leaves empty).

The configured ``path`` is never created (like a local storage's): it must exist on the
server, so a volume not mounted there or a typo is an error instead of backups written onto
whatever filesystem holds the empty mount point.  Directories below it are created as needed.

One SSH connection per storage, opened on first use and re-opened when it dropped.
Each writer and reader gets its own SFTP channel on that connection, so their
pipelined responses are never consumed by another operation.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import errno
import hashlib
import io
import logging
import posixpath
import shlex
import socket
import stat as statmod
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import paramiko
from paramiko.sftp import CMD_DATA, CMD_EXTENDED, CMD_READ, CMD_STATUS, int64

from upkeeper.config.storage import SftpStorageConfig
from upkeeper.errors import StorageError
from upkeeper.shield import shielded
from upkeeper.storage.base import ObjectInfo, check_key, replace_by_rename

log = logging.getLogger(__name__)
# paramiko's transport thread logs a connection that failed (no SSH banner within the timeout…) as an ERROR per line
# of its traceback; the storage raises that failure itself, as a StorageError.  Without a handler of their own
# those lines reached stderr through logging's last resort: a traceback in the middle of a command's output.  A
# handler configured above (the daemon's) still gets them.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

TMP_SUFFIX = ".upkeeper-partial"
#: the modes of the objects (their partial files too) and of the directories upkeeper makes on the server: a
#: backup is data and a manifest names the tables -- readable by the SSH user only, whatever the server's umask
OBJECT_MODE = 0o600
DIR_MODE = 0o700
READ_WINDOW = 4 * 1024 * 1024  # bytes requested ahead per read round
REQUEST_SIZE = 32768  # bytes per SFTP read request (paramiko's and OpenSSH's usual maximum)
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
KEEPALIVE = 30  # at most this many seconds of silence before a probe, so idle NAT/firewall state does not expire
PROBES = 3  # unanswered probes before a silent server counts as gone: OpenSSH's ServerAliveCountMax

T = TypeVar("T")

#: Exceptions that mean the connection itself is gone (as opposed to an SFTP status error).
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (EOFError, paramiko.SSHException, ConnectionError,
                                                        TimeoutError, socket.timeout)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:…`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _RejectUnknownHost(paramiko.MissingHostKeyPolicy):
    """Refuse a host key that is not in known_hosts, naming the host and the key's fingerprint."""

    def __init__(self, storage: SftpStorage, known_hosts: Path) -> None:
        self.storage = storage
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        c = self.storage.config
        missing = "" if self.known_hosts.exists() else f" ({self.known_hosts} does not exist)"
        port = f"-p {c.port} " if c.port != 22 else ""
        raise StorageError(
            f"{self.storage.describe()}: the host key of {hostname} is not in {self.known_hosts}{missing}: "
            f"{key.get_name()} {fingerprint(key)}",
            f"Try: compare that fingerprint with the server's own (on the server: ssh-keygen -lf "
            f"/etc/ssh/ssh_host_*_key.pub), then add it: ssh-keyscan {port}{c.host} >> {self.known_hosts}",
            permanent=True,
        )


class _AcceptUnknownHost(paramiko.MissingHostKeyPolicy):
    """``host_key_check: false``: accept any host key, loudly."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        log.warning("sftp: accepting the unverified host key of %s (%s %s) because host_key_check is off",
                    hostname, key.get_name(), fingerprint(key))


class _WatchedSocket(socket.socket):
    """A TCP socket that notes when it last received anything (the watchdog's measure of a live server)."""

    last_recv: float

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        self.last_recv = time.monotonic()
        return data


def _watched_connection(host: str, port: int, timeout: float) -> _WatchedSocket:
    raw = socket.create_connection((host, port), timeout=timeout)
    sock = _WatchedSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
    sock.last_recv = time.monotonic()
    return sock


class _Watchdog(threading.Thread):
    """OpenSSH's ServerAliveInterval/ServerAliveCountMax for a paramiko connection.

    A stalled network (a NAT or firewall that dropped its state, a hung server, a half-open
    connection) sends no RST and no data, and paramiko waits for it without limit in places
    (opening a session, a write into a full socket).  When the server has sent nothing for a
    third of ``timeout`` (at most ``KEEPALIVE`` s) it is probed with ``keepalive@openssh.com``,
    which sshd answers even while its SFTP process is busy; after ``timeout`` s of silence the
    connection is closed, which wakes every operation waiting on it with an error.  A slow but
    live link keeps sending acknowledgements and data, so it is never cut.
    """

    def __init__(self, transport: paramiko.Transport, sock: _WatchedSocket, timeout: float, label: str) -> None:
        super().__init__(daemon=True, name="upkeeper-sftp-watchdog")
        self.label = label
        self.transport = transport
        self.sock = sock
        self.timeout = timeout
        self.stopped = threading.Event()
        self.stalled: float | None = None  # seconds of silence that closed the connection
        self.prober: threading.Thread | None = None

    def run(self) -> None:
        probe_every = min(KEEPALIVE, self.timeout / PROBES)
        tick = min(1.0, probe_every / 2)
        last_probe = 0.0
        while not self.stopped.wait(tick) and self.transport.is_active():
            now = time.monotonic()
            silent = now - self.sock.last_recv
            if silent >= self.timeout:
                self.stalled = silent
                log.warning("%s: the server sent nothing for %.0f s (timeout); closing the connection", self.label,
                            silent)
                self.transport.close()
                return
            if silent >= probe_every and now - last_probe >= probe_every and not (
                    self.prober is not None and self.prober.is_alive()):
                last_probe = now
                # sent from a thread of its own: on a stalled link the send itself may block until the close
                self.prober = threading.Thread(target=self._probe, daemon=True, name="upkeeper-sftp-probe")
                self.prober.start()

    def _probe(self) -> None:
        # wait=True asks for a reply (sshd answers this unknown request with a failure, which is enough) and
        # returns when it arrives or the connection closes; wait=False would ask for none
        with contextlib.suppress(Exception):
            self.transport.global_request("keepalive@openssh.com", wait=True)

    def stop(self) -> None:
        self.stopped.set()


def _status_error(action: str, where: str, exc: BaseException) -> StorageError:
    """An SFTP status error (the connection is fine) as a StorageError."""
    code = getattr(exc, "errno", None)
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if code == errno.ENOENT:
        return StorageError(f"{action} {where}: no such file or directory", permanent=True)
    if code in (errno.EACCES, errno.EPERM):
        return StorageError(f"{action} {where}: permission denied",
                            "Try: check that the SSH user may write to the storage path", permanent=True)
    if text == "Failure":  # SSH_FX_FAILURE: OpenSSH's answer to ENOSPC, EDQUOT and other write errors
        return StorageError(f"{action} {where}: the server reported a failure (disk full or quota exceeded?)",
                            "Try: check free space on the server", permanent=False)
    return StorageError(f"{action} {where}: {text}", permanent=False)


class SftpWriter:
    """Writes to a temporary file on its own SFTP channel; ``commit`` renames it into place."""

    def __init__(self, storage: SftpStorage, key: str) -> None:
        self.storage = storage
        self.key = key
        self.final = storage.remote_path(key)
        directory, base = posixpath.split(self.final)
        self.tmp = posixpath.join(directory, f".{base}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
        self.size = 0
        self.sftp: paramiko.SFTPClient | None = None
        self.fh: paramiko.SFTPFile | None = None
        #: the directories this writer made (outermost first): an abort removes them again while empty, so a
        #: failed backup leaves no empty ``<target>/<database>/<id>/`` on the server
        self.created: list[str] = []
        self.sftp = storage.open_channel()
        try:
            for attempt in range(3):
                try:
                    storage.makedirs(self.sftp, directory, self.created)
                    self.fh = self.sftp.open(self.tmp, "wb")
                    # before a byte is in it: the server makes it 0666 less its umask, 0644 for every user of
                    # the backup server to read (a backup is data, a manifest names the tables)
                    self.fh.chmod(OBJECT_MODE)
                    break
                except FileNotFoundError:
                    if attempt == 2:
                        raise
                    # another writer's abort (here or in another process), a delete or a clean removed an empty
                    # directory of our path, perhaps between our mkdir and open: forget what we knew, make it again
                    storage.forget_dirs()
            assert self.fh is not None
            self.fh.set_pipelined(True)
        except Exception as exc:
            err = storage.translate("cannot create", self.tmp, exc)
            self.abort()
            raise err from None
        except BaseException:
            self.abort()
            raise

    def write(self, data: bytes) -> int:
        if self.fh is None:
            raise StorageError(f"{self.storage.where(self.key)}: write after commit/abort", permanent=True)
        try:
            self.fh.write(data)
        except Exception as exc:
            err = self.storage.translate("cannot write", self.tmp, exc)
            self.abort()
            raise err from None
        except BaseException:
            self.abort()
            raise
        self.size += len(data)
        return len(data)

    def commit(self) -> ObjectInfo:
        if self.fh is None or self.sftp is None:
            raise StorageError(f"{self.storage.where(self.key)}: commit after commit/abort", permanent=True)
        fh, sftp = self.fh, self.sftp
        step = "cannot write"
        try:
            _drain(fh)
            step = "cannot fsync"
            self.storage.fsync(sftp, fh)
            step = "cannot close"
            fh.close()
            self.fh = None
            step = "cannot check"
            written = sftp.stat(self.tmp).st_size
            if written != self.size:
                raise StorageError(f"cannot commit {self.storage.where(self.key)}: the server holds {written} "
                                   f"bytes of the {self.size} written", permanent=False)
            step = "cannot rename into place"
            _rename(sftp, self.tmp, self.final)
        except Exception as exc:
            err = self.storage.translate(step, self.tmp, exc)
            self.abort()
            raise err from None
        except BaseException:
            self.abort()
            raise
        self._close_channel()
        return ObjectInfo(self.key, self.size, datetime.now(UTC))

    def commit_exclusive(self) -> bool:
        """Like :meth:`commit`, but only where no object is under the key: the protocol's plain rename
        (SSH_FXP_RENAME), which refuses to replace an existing file (OpenSSH: ``link`` then ``unlink``, atomic),
        moves the temporary file into place.  False (the temporary file removed) when an object was there."""
        if self.fh is None or self.sftp is None:
            raise StorageError(f"{self.storage.where(self.key)}: commit after commit/abort", permanent=True)
        fh, sftp = self.fh, self.sftp
        step = "cannot write"
        try:
            _drain(fh)
            step = "cannot fsync"
            self.storage.fsync(sftp, fh)
            step = "cannot close"
            fh.close()
            self.fh = None
            step = "cannot move into place"
            for attempt in range(1, EXCLUSIVE_RENAME_ATTEMPTS + 1):
                try:
                    sftp.rename(self.tmp, self.final)
                    break
                except OSError as refused:
                    if _broken(sftp, refused):
                        raise
                    try:
                        sftp.stat(self.final)
                    except FileNotFoundError:
                        # refused, yet nothing is there now: the object that was there went away between the
                        # two requests (a takeover claim deleted by its taker), or the refusal was the server's
                        # own failure — try again, and after a few attempts it is that failure
                        if attempt == EXCLUSIVE_RENAME_ATTEMPTS:
                            raise refused from None
                        continue
                    self.abort()
                    return False
        except Exception as exc:
            err = self.storage.translate(step, self.tmp, exc)
            self.abort()
            raise err from None
        except BaseException:
            self.abort()
            raise
        self.created.clear()
        self._close_channel()
        return True

    @shielded()  # a stop arriving meanwhile waits for it (upkeeper.shield)
    def abort(self) -> None:
        """Close and remove the temporary file, then the directories this writer made while they are empty (on a
        fresh connection if this one dropped)."""
        if self.fh is not None:
            with contextlib.suppress(Exception):
                self.fh.close()
            self.fh = None
        if self.sftp is None:
            return
        try:
            self._clean(self.sftp)
        except Exception:
            try:
                self.storage.call(self._clean)
            except StorageError as exc:
                log.warning("%s: could not remove the partial file %s (list ignores it) or the directories made "
                            "for it: %s", self.storage.describe(), self.tmp, exc)
        self._close_channel()

    def _clean(self, sftp: paramiko.SFTPClient) -> None:
        """Remove the partial file, then the directories made for it; a broken channel raises before the end."""
        refused: OSError | None = None
        try:
            _remove_quietly(sftp, self.tmp)
        except OSError as exc:
            if _broken(sftp, exc):
                raise
            refused = exc  # the server's answer (the name is too long …): its directories may still go
        self._remove_created(sftp)
        if refused is not None:
            raise refused

    def _remove_created(self, sftp: paramiko.SFTPClient) -> None:
        """rmdir the directories this writer made, innermost first, stopping at one the server refuses to remove
        (not empty: another object, of this set or another, or another writer's partial file is in it); anything
        older is never touched.  A lost connection raises, so that the caller tries again on a fresh one."""
        while self.created:
            path = self.created[-1]
            self.storage.forget_dir(path)  # before the rmdir: no writer of this storage may count on it meanwhile
            try:
                sftp.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if _broken(sftp, exc):
                    raise
                self.created.clear()
                return
            self.storage.forget_dir(path)  # and after: a writer that saw it just before the rmdir may have noted it
            self.created.pop()

    def _close_channel(self) -> None:
        if self.sftp is not None:
            with contextlib.suppress(Exception):
                self.sftp.close()
            self.sftp = None


#: attempts at an exclusive rename that is refused while nothing is found at the key right after (see
#: :meth:`SftpWriter.commit_exclusive`): SFTP's SSH_FX_FAILURE does not say whether a file was in the way
EXCLUSIVE_RENAME_ATTEMPTS = 3


def _broken(sftp: paramiko.SFTPClient, exc: BaseException) -> bool:
    """Did ``exc`` come from a lost connection or a closed channel, rather than from the server's answer?"""
    if isinstance(exc, _CONNECTION_ERRORS):
        return True
    channel = sftp.get_channel()
    if channel is None or channel.closed:
        return True
    transport = channel.get_transport()
    return transport is None or not transport.is_active()


def _remove_quietly(sftp: paramiko.SFTPClient, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        sftp.remove(path)


def _drain(fh: paramiko.SFTPFile) -> None:
    """Flush and wait for every pipelined write's status, raising the first error.

    paramiko's ``close()`` does not check the statuses of writes still in flight, so a
    failed final write (disk full) would go unnoticed; this reads them one by one.
    """
    fh.flush()
    sftp: Any = fh.sftp
    reqs = getattr(fh, "_reqs", None)
    expecting = getattr(sftp, "_expecting", None)
    if reqs is None or expecting is None:  # a future paramiko: the size check in commit still guards
        return
    while reqs:
        req = reqs.popleft()
        if req not in expecting:
            continue
        t, _msg = sftp._read_response(req)  # raises IOError for an error status
        if t != CMD_STATUS:
            raise StorageError("unexpected SFTP response to a write", permanent=False)


def _rename(sftp: paramiko.SFTPClient, src: str, dst: str) -> None:
    try:
        sftp.posix_rename(src, dst)
    except OSError as exc:
        if "unsupported" not in str(exc).lower():
            raise
        # a server without posix-rename@openssh.com: plain SFTP rename refuses to replace a file
        with contextlib.suppress(FileNotFoundError):
            sftp.remove(dst)
        sftp.rename(src, dst)


class _Responses:
    """Collects the responses to our pipelined read requests (paramiko hands them to ``_async_response``)."""

    def __init__(self) -> None:
        self.got: dict[int, tuple[int, Any]] = {}

    def _async_response(self, t: int, msg: Any, num: int) -> None:
        self.got[num] = (t, msg)


class _SftpReader(io.RawIOBase):
    """Reads a remote file in windows of pipelined 32 KiB requests: bounded memory, no round trip per request.

    paramiko's own ``prefetch``/``readv`` keep whatever arrives until it is read (unbounded
    when the consumer is slower than the network) and can fall back to one request per round
    trip half-way; so the window is driven here, with the same SFTP client primitives they use.
    """

    def __init__(self, storage: SftpStorage, key: str, sftp: paramiko.SFTPClient, fh: paramiko.SFTPFile,
                 size: int) -> None:
        self.storage = storage
        self.key = key
        self.sftp = sftp
        self.fh = fh
        self.size = size
        self.pos = 0
        self.buf = bytearray()
        self.buf_off = 0

    def readable(self) -> bool:
        return True

    def _fetch(self, pos: int, n: int) -> bytearray:
        sftp: Any = self.sftp
        collector = _Responses()
        requests = []
        off = pos
        while off < pos + n:
            size = min(REQUEST_SIZE, pos + n - off)
            num = sftp._async_request(collector, CMD_READ, self.fh.handle, int64(off), size)
            requests.append((num, off, size))
            off += size
        out = bytearray()
        for num, off, size in requests:
            while num not in collector.got:
                sftp._read_response()
            t, msg = collector.got.pop(num)
            if t == CMD_STATUS:
                sftp._convert_status(msg)  # raises the server's error (or EOFError)
                raise EOFError(f"unexpected end of file at byte {off}")
            if t != CMD_DATA:
                raise StorageError("unexpected SFTP response to a read", permanent=False)
            data = msg.get_string()
            out += data
            while len(data) < size:  # a server may answer with fewer bytes: fetch the rest directly
                self.fh.seek(off + len(data))
                more = self.fh.read(size - len(data))
                if not more:
                    raise EOFError(f"unexpected end of file at byte {off + len(data)}")
                out += more
                data += more
        return out

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if self.buf_off >= len(self.buf):
            if self.pos >= self.size:
                return 0
            n = min(READ_WINDOW, self.size - self.pos)
            self.buf = bytearray()
            try:
                self.buf = self._fetch(self.pos, n)
            except Exception as exc:
                raise self.storage.translate("cannot read", self.storage.remote_path(self.key), exc) from None
            self.buf_off = 0
            self.pos += n
        k = min(len(view), len(self.buf) - self.buf_off)
        view[:k] = self.buf[self.buf_off:self.buf_off + k]
        self.buf_off += k
        return k

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self.fh.close()
            with contextlib.suppress(Exception):
                self.sftp.close()
            super().close()


class SftpStorage:
    kind = "sftp"

    def __init__(self, name: str, config: SftpStorageConfig) -> None:
        self.name = name
        self.config = config
        self.root = config.path.rstrip("/") or "/"
        self._ssh: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._dirs: set[str] = set()
        self._fsync_supported: bool | None = None
        self._watchdog: _Watchdog | None = None

    # --- connection -----------------------------------------------------------------------------

    @property
    def known_hosts(self) -> Path:
        return Path(self.config.known_hosts or DEFAULT_KNOWN_HOSTS).expanduser()

    def _load_key(self) -> paramiko.PKey:
        path = Path(self.config.key_file).expanduser()
        passphrase = self.config.secret("key_passphrase")
        try:
            password: Any = passphrase.encode() if passphrase else None  # paramiko's stubs say str; it needs bytes
            return paramiko.PKey.from_path(path, password=password)
        except paramiko.PasswordRequiredException:
            raise StorageError(f"{self.describe()}: the key {path} is encrypted",
                               "Try: set key_passphrase_file (or key_passphrase)", permanent=True) from None
        except FileNotFoundError:
            raise StorageError(f"{self.describe()}: key_file {path} does not exist", permanent=True) from None
        except OSError as exc:
            raise StorageError(f"{self.describe()}: cannot read key_file {path}: {exc.strerror or exc}",
                               permanent=True) from None
        except (paramiko.SSHException, ValueError, TypeError) as exc:
            if passphrase is None and "password" in str(exc).lower():
                raise StorageError(f"{self.describe()}: the key {path} is encrypted",
                                   "Try: set key_passphrase_file (or key_passphrase)", permanent=True) from None
            if passphrase is not None and _is_encrypted_key(path):
                raise StorageError(f"{self.describe()}: cannot decrypt the key {path}: wrong passphrase",
                                   "Try: check key_passphrase_file", permanent=True) from None
            raise StorageError(f"{self.describe()}: cannot load key_file {path}: {exc}",
                               "Try: use an OpenSSH private key (Ed25519, ECDSA or RSA); check the passphrase",
                               permanent=True) from None

    def _connect(self) -> paramiko.SFTPClient:
        c = self.config
        pkey = self._load_key()
        client = paramiko.SSHClient()
        try:
            if c.host_key_check:
                if self.known_hosts.exists():
                    try:
                        client.load_host_keys(str(self.known_hosts))
                    except (OSError, paramiko.SSHException) as exc:
                        raise StorageError(f"{self.describe()}: cannot read known_hosts {self.known_hosts}: {exc}",
                                           permanent=True) from None
                client.set_missing_host_key_policy(_RejectUnknownHost(self, self.known_hosts))
            else:
                client.set_missing_host_key_policy(_AcceptUnknownHost())
            sock = _watched_connection(c.host, c.port, c.timeout)
            client.connect(c.host, port=c.port, username=c.user, pkey=pkey, timeout=c.timeout,
                           banner_timeout=c.timeout, auth_timeout=c.timeout, allow_agent=False,
                           look_for_keys=False, sock=sock)
            transport = client.get_transport()
            assert transport is not None
            self._watchdog = _Watchdog(transport, sock, c.timeout, self.describe())
            self._watchdog.start()
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(c.timeout)  # type: ignore[union-attr]
        except StorageError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise StorageError(
                f"{self.describe()}: the host key of {c.host} does NOT match {self.known_hosts}: the server "
                f"presented {exc.key.get_name()} {fingerprint(exc.key)}, known_hosts has "
                f"{fingerprint(exc.expected_key)} — the server was reinstalled, or someone is in the middle",
                "Try: confirm the new key with the server's admin, then replace the line in known_hosts",
                permanent=True) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise StorageError(
                f"{self.describe()}: authentication as {c.user!r} with key {c.key_file} failed: {exc}",
                f"Try: add the public key ({c.key_file}.pub) to ~{c.user}/.ssh/authorized_keys on {c.host}",
                permanent=True) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            client.close()
            text = self._stall_text() or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError) or "banner" in text or text == "No existing session":
                # the TCP connection opened but the SSH handshake did not finish in time (paramiko says
                # "Error reading SSH protocol banner" or, when its negotiation wait ran out first, "No existing
                # session"): a hung server or a stalled network
                text = (f"no SSH handshake from the server within timeout ({c.timeout:g} s): the server or the "
                        f"network stalled ({text})")
            self._stop_watchdog()
            raise StorageError(f"{self.describe()}: cannot connect to {c.host}:{c.port}: {text}",
                               "Try: check host, port and that sshd runs; the next run retries",
                               permanent=False) from None
        self._ssh = client
        return sftp

    def _alive(self) -> bool:
        """Is the SSH connection (the transport all channels share) up?"""
        if self._ssh is None:
            return False
        t = self._ssh.get_transport()
        return t is not None and t.is_active()

    def sftp(self) -> paramiko.SFTPClient:
        """The shared SFTP channel, (re)connecting when there is none or the connection dropped."""
        if not self._alive():
            self._reset()
            self._sftp = self._connect()
        elif self._sftp is None:  # only the shared channel was dropped: a new one on the same connection
            self._sftp = self.open_channel()
        return self._sftp

    def _drop_shared_channel(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None

    def open_channel(self) -> paramiko.SFTPClient:
        """A new SFTP channel on the (re)connected SSH connection, for one writer or reader."""
        if not self._alive():
            self.sftp()
        refusals = 0
        attempt = 0
        while True:
            attempt += 1
            assert self._ssh is not None
            try:
                channel = self._ssh.open_sftp()
                channel.get_channel().settimeout(self.config.timeout)  # type: ignore[union-attr]
                return channel
            except paramiko.ChannelException as exc:
                # the connection is fine but the server refuses another session (sshd's MaxSessions).
                # A channel we just closed may not be released yet: wait a little, then give up —
                # keeping the connection, which other writers and readers are using.
                refusals += 1
                if refusals < 5:
                    time.sleep(0.05 * 2 ** refusals)
                    attempt -= 1
                    continue
                raise StorageError(
                    f"{self.describe()}: the server refused another SFTP session ({exc.text}); too many "
                    "readers and writers at once on one storage",
                    "Try: fewer parallel transfers to this storage, or raise MaxSessions in the server's "
                    "sshd_config", permanent=False) from None
            except (OSError, EOFError, paramiko.SSHException) as exc:
                if attempt >= 2 or self._alive():
                    raise self.translate("cannot open a channel to", self.root, exc) from None
                self._reset()  # the connection died between the check and the open: one fresh try
                self._sftp = self._connect()

    def _reset(self) -> None:
        self._stop_watchdog()
        for thing in (self._sftp, self._ssh):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()
        self._sftp = None
        self._ssh = None

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None

    def _stall_text(self) -> str | None:
        """Why the watchdog closed the connection, if it did."""
        w = self._watchdog
        if w is None or w.stalled is None:
            return None
        return (f"the server sent nothing for {w.stalled:.0f} s, not even an answer to keepalives (timeout: "
                f"{self.config.timeout:g} s); the network or the server stalled")

    def translate(self, action: str, path: str, exc: BaseException) -> StorageError:
        if isinstance(exc, StorageError):
            return exc
        where = f"{self.config.user}@{self.config.host}:{path}"
        if not self._alive() and isinstance(exc, _CONNECTION_ERRORS + (OSError,)):
            reason = self._stall_text() or str(exc) or type(exc).__name__
            self._reset()
            return StorageError(f"{action} {where}: connection lost ({reason})",
                                "Try: check the network and the SSH server; the next operation reconnects",
                                permanent=False)
        if isinstance(exc, TimeoutError):  # this channel got no answer; the connection is still up
            return StorageError(f"{action} {where}: no answer from the server within timeout "
                                f"({self.config.timeout:g} s)",
                                "Try: check the network and the SSH server's load and logs; the next run retries "
                                "(raise 'timeout' of the storage for a server that is slow but alive)",
                                permanent=False)
        if isinstance(exc, _CONNECTION_ERRORS):  # this channel broke; the connection is still up
            return StorageError(f"{action} {where}: {str(exc) or type(exc).__name__}",
                                "Try: check the SSH server's load and logs; the next run retries",
                                permanent=False)
        if isinstance(exc, OSError):
            return _status_error(action, where, exc)
        return StorageError(f"{action} {where}: {exc}", permanent=False)

    def call(self, fn: Callable[[paramiko.SFTPClient], T], action: str = "cannot reach", path: str = "") -> T:
        """Run an idempotent operation; after a dropped connection, reconnect and try once more."""
        for attempt in (1, 2):
            sftp = self.sftp()
            try:
                return fn(sftp)
            except Exception as exc:
                broken = not isinstance(exc, StorageError) and (
                    isinstance(exc, _CONNECTION_ERRORS) or not self._alive())
                if broken and attempt == 1:
                    log.info("%s: connection or channel lost (%s); reopening", self.describe(), exc)
                    if self._alive():
                        self._drop_shared_channel()
                    else:
                        self._reset()
                    continue
                raise self.translate(action, path or self.root, exc) from None
        raise AssertionError("unreachable")

    # --- paths ----------------------------------------------------------------------------------

    def remote_path(self, key: str) -> str:
        return posixpath.join(self.root, check_key(key))

    def where(self, key: str) -> str:
        return f"{self.config.user}@{self.config.host}:{posixpath.join(self.root, key)}"

    def forget_dirs(self) -> None:
        self._dirs.clear()

    def forget_dir(self, path: str) -> None:
        """``path`` may be removed: the next write below it checks (and makes) it again."""
        self._dirs.discard(path)

    def missing_root(self) -> StorageError:
        c = self.config
        port = f"-p {c.port} " if c.port != 22 else ""
        return StorageError(
            f"{self.describe()}: the storage directory does not exist (upkeeper never creates it, so that an "
            "unmounted volume on the server or a wrong path gets no backups)",
            f"Try: mount the volume on {c.host}, or correct 'path' of storage {self.name!r}; for a new storage, "
            f"create the directory once (as the server's admin if {c.user} may only use SFTP): "
            f"ssh {port}{c.user}@{c.host} mkdir -p -m 700 {shlex.quote(self.root)}", permanent=True)

    def check_root(self, sftp: paramiko.SFTPClient) -> None:
        """The configured directory exists on the server and is a directory (upkeeper never creates it)."""
        try:
            st = sftp.stat(self.root)
        except FileNotFoundError:
            raise self.missing_root() from None
        if not statmod.S_ISDIR(st.st_mode or 0):
            raise StorageError(f"{self.describe()}: the storage path is not a directory",
                               f"Try: point 'path' of storage {self.name!r} at a directory", permanent=True)

    def makedirs(self, sftp: paramiko.SFTPClient, path: str, created: builtins.list[str] | None = None) -> None:
        """Create ``path`` and its missing parents below the storage directory (never that one itself), appending
        each directory made here to ``created`` (outermost first; also when a deeper one then fails)."""
        if path in self._dirs:
            return
        if path == self.root:
            self.check_root(sftp)
            self._dirs.add(path)
            return
        if path in ("", "/", "."):  # above the root: keys never lead there (check_key)
            raise AssertionError(f"{path!r} is not below the storage directory {self.root!r}")
        try:
            st = sftp.stat(path)
        except FileNotFoundError:
            self.makedirs(sftp, posixpath.dirname(path), created)
            try:
                sftp.mkdir(path, DIR_MODE)
                if created is not None:
                    created.append(path)
            except OSError as refused:
                try:
                    st = sftp.stat(path)  # created meanwhile by someone else? then fine
                except FileNotFoundError:
                    if isinstance(refused, FileNotFoundError):
                        raise  # a directory above vanished since we looked: the writer forgets them and tries again
                    # the mkdir's own reason (permission denied …), naming the directory, not "no such file"
                    raise self.translate("cannot create the directory", path, refused) from None
                if not statmod.S_ISDIR(st.st_mode or 0):
                    raise
        else:
            if not statmod.S_ISDIR(st.st_mode or 0):
                raise StorageError(f"{self.where(path)} exists and is not a directory", permanent=True)
        self._dirs.add(path)

    def fsync(self, sftp: paramiko.SFTPClient, fh: paramiko.SFTPFile) -> None:
        if not self.config.fsync or self._fsync_supported is False:
            return
        s: Any = sftp
        try:
            s._request(CMD_EXTENDED, "fsync@openssh.com", fh.handle)
        except OSError as exc:
            if "unsupported" in str(exc).lower():
                self._fsync_supported = False
                log.info("%s: the server does not support fsync@openssh.com; relying on rename", self.describe())
                return
            raise
        self._fsync_supported = True

    # --- the Storage interface ------------------------------------------------------------------

    def open_write(self, key: str) -> SftpWriter:
        self.remote_path(key)
        return SftpWriter(self, key)

    def open_read(self, key: str) -> BinaryIO:
        path = self.remote_path(key)
        sftp = self.open_channel()
        try:
            try:
                fh = sftp.open(path, "rb")
                st = fh.stat()
                if not statmod.S_ISREG(st.st_mode or 0):  # a directory is a key prefix, not an object
                    fh.close()
                    raise FileNotFoundError(path)
            except FileNotFoundError:
                self.check_root(sftp)  # an unmounted volume is not "no such object"
                raise
            size = st.st_size or 0
        except FileNotFoundError:
            sftp.close()
            raise StorageError(f"{self.describe()}: no object {key!r}", permanent=True) from None
        except Exception as exc:
            with contextlib.suppress(Exception):
                sftp.close()
            raise self.translate("cannot read", path, exc) from None
        return io.BufferedReader(_SftpReader(self, key, sftp, fh, size), buffer_size=256 * 1024)

    def stat(self, key: str) -> ObjectInfo | None:
        path = self.remote_path(key)

        def op(sftp: paramiko.SFTPClient) -> ObjectInfo | None:
            try:
                st = sftp.stat(path)
            except FileNotFoundError:
                self.check_root(sftp)  # an unmounted volume is not "no such object"
                return None
            if not statmod.S_ISREG(st.st_mode or 0):
                return None
            return ObjectInfo(key, st.st_size or 0, _mtime(st))

        return self.call(op, "cannot stat", path)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``.  A root that does not exist, or a directory the SSH user cannot read, is
        an error, never an empty or partial listing (an unmounted volume on the server must not look like "no
        backups")."""
        found = self.call(lambda sftp: self._walk(sftp, prefix), "cannot list", self.root)
        yield from found

    def _walk(self, sftp: paramiko.SFTPClient, prefix: str) -> builtins.list[ObjectInfo]:
        out: builtins.list[ObjectInfo] = []

        def walk(directory: str, rel: str) -> None:
            try:
                entries = sftp.listdir_attr(directory)
            except FileNotFoundError:
                if directory == self.root:
                    raise self.missing_root() from None
                return  # a set deleted while we walk (prune in another process) is simply not listed
            except OSError as exc:
                if isinstance(exc, _CONNECTION_ERRORS) or not self._alive():
                    raise  # call() reconnects and tries once more
                raise self.translate("cannot list", directory, exc) from None  # permission denied …
            for e in sorted(entries, key=lambda a: a.filename):
                key = rel + e.filename
                mode = e.st_mode or 0
                if statmod.S_ISDIR(mode):
                    sub = key + "/"
                    if sub.startswith(prefix) or prefix.startswith(sub):
                        walk(posixpath.join(directory, e.filename), sub)
                elif statmod.S_ISREG(mode) and not e.filename.endswith(TMP_SUFFIX) and key.startswith(prefix):
                    out.append(ObjectInfo(key, e.st_size or 0, _mtime(e)))

        walk(self.root, "")
        return out

    def partial_activity(self, prefix: str) -> datetime | None:
        """The newest modification of a temporary file of a write in progress under ``prefix`` (see
        ``base.SeesPartials``)."""

        def op(sftp: paramiko.SFTPClient) -> float | None:
            latest: float | None = None

            def walk(directory: str) -> None:
                nonlocal latest
                try:
                    entries = sftp.listdir_attr(directory)
                except FileNotFoundError:
                    return
                for e in entries:
                    if statmod.S_ISDIR(e.st_mode or 0):
                        walk(posixpath.join(directory, e.filename))
                    elif e.filename.endswith(TMP_SUFFIX) and e.st_mtime is not None:
                        latest = e.st_mtime if latest is None else max(latest, e.st_mtime)

            self.check_root(sftp)
            walk(top)
            return latest

        top = posixpath.join(self.root, prefix.rstrip("/")) if prefix else self.root
        t = self.call(op, "cannot look for writes in progress under", top)
        return None if t is None else datetime.fromtimestamp(t, UTC)

    def clean_partials(self, older_than: timedelta = timedelta(hours=24), prefix: str = "") -> int:
        """Remove temporary files of crashed writers under ``prefix`` not modified for ``older_than``, and the
        directories above them left empty."""
        cutoff = time.time() - older_than.total_seconds()

        def op(sftp: paramiko.SFTPClient) -> int:
            n = 0

            def walk(directory: str) -> None:
                nonlocal n
                try:
                    entries = sftp.listdir_attr(directory)
                except FileNotFoundError:
                    return
                for e in entries:
                    path = posixpath.join(directory, e.filename)
                    if statmod.S_ISDIR(e.st_mode or 0):
                        walk(path)
                    elif e.filename.endswith(TMP_SUFFIX) and (e.st_mtime or 0) <= cutoff:
                        with contextlib.suppress(FileNotFoundError):
                            sftp.remove(path)
                            n += 1
                        self._remove_empty_parents(sftp, path)  # the directories made for it, now empty

            self.check_root(sftp)
            walk(top)
            return n

        top = posixpath.join(self.root, prefix.rstrip("/")) if prefix else self.root
        return self.call(op, "cannot clean partial files under", top)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """See ``base.Storage.create_exclusive`` (a temporary file, renamed without replacing)."""
        w = SftpWriter(self, key)
        w.write(data)
        return w.commit_exclusive()

    def replace_if(self, key: str, data: bytes, current: bytes) -> bool:
        """See ``base.Storage.replace_if`` (compared, then a temporary file renamed into place: not atomic)."""
        return replace_by_rename(self, key, data, current)

    def delete_if(self, key: str, current: bytes) -> bool:
        """See ``base.Storage.delete_if`` (renamed aside with the protocol's plain rename, compared, deleted or
        renamed back — the plain rename never replaces an object written at the key meanwhile)."""
        path = self.remote_path(key)
        directory, base = posixpath.split(path)
        aside = posixpath.join(directory, f".{base}.{uuid.uuid4().hex[:8]}.aside{TMP_SUFFIX}")

        def put_back(sftp: paramiko.SFTPClient) -> None:
            try:
                sftp.rename(aside, path)
            except OSError as refused:
                if _broken(sftp, refused):
                    raise
                log.warning("%s: written again while it was set aside to be compared; the version set aside is "
                            "dropped", path)
                sftp.remove(aside)

        def op(sftp: paramiko.SFTPClient) -> bool:
            try:
                sftp.rename(path, aside)
            except FileNotFoundError:
                return False
            try:
                with sftp.open(aside, "rb") as fh:
                    there = fh.read()
            except BaseException:
                put_back(sftp)
                raise
            if there != current:
                put_back(sftp)
                return False
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(aside)
            self._remove_empty_parents(sftp, path)
            return True

        return self.call(op, "cannot delete", path)

    def delete(self, key: str) -> None:
        path = self.remote_path(key)

        def op(sftp: paramiko.SFTPClient) -> None:
            try:
                sftp.remove(path)
            except FileNotFoundError:
                return
            self._remove_empty_parents(sftp, path)

        self.call(op, "cannot delete", path)

    def _remove_empty_parents(self, sftp: paramiko.SFTPClient, path: str) -> None:
        """rmdir the directories above ``path`` while they are empty, up to the storage directory (never that one)."""
        parent = posixpath.dirname(path)
        while parent != self.root and parent.startswith(self.root.rstrip("/") + "/"):
            self._dirs.discard(parent)
            try:
                sftp.rmdir(parent)
            except FileNotFoundError:
                pass
            except OSError:
                break
            self._dirs.discard(parent)
            parent = posixpath.dirname(parent)

    def describe(self) -> str:
        c = self.config
        port = f":{c.port}" if c.port != 22 else ""
        path = self.root if self.root.startswith("/") else f"/~/{self.root}"  # relative to the login directory
        return f"sftp://{c.user}@{c.host}{port}{path}"

    def close(self) -> None:
        self._reset()


def _is_encrypted_key(path: Path) -> bool:
    """Does the key load without a passphrase complain that it needs one?"""
    try:
        paramiko.PKey.from_path(path)
    except (paramiko.SSHException, ValueError, TypeError) as exc:
        return "password" in str(exc).lower()
    except OSError:
        return False
    return False


def _mtime(st: paramiko.SFTPAttributes) -> datetime | None:
    return datetime.fromtimestamp(st.st_mtime, UTC) if st.st_mtime is not None else None
